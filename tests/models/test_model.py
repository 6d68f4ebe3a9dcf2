import pytest
import torch

from rsitr._compat import open_clip
from rsitr.config import ModelConfig
from rsitr.errors import UserError
from rsitr.models import TINY_MODEL, ScoringRecipe, create_model
from rsitr.models.factory import resolve_quick_gelu


@pytest.fixture(scope="module")
def model():
    return create_model(TINY_MODEL).model


def test_documented_shapes_for_tiny_config(model):
    images = torch.randn(3, 3, 32, 32)
    image = model.encode_image(images)
    assert image.global_.shape == (3, 32)
    assert image.tokens.shape == (3, 16, 32)  # (32 / 8)^2 patches, projected to the embed dim
    tokens = model.tokenize(["a plane", "two tennis courts near a road", ""])
    assert tokens.shape == (3, 32)  # the tiny config's context length
    text = model.encode_text(tokens)
    assert text.global_.shape == (3, 32) and text.tokens.shape == (3, 32, 32) and text.mask.shape == (3, 32)
    # start + words + end; empty caption is start + end
    assert text.mask.sum(dim=1).tolist() == [4, 8, 2]
    assert model.embed_dim == 32 and model.vocab_size == 49408


def test_global_embedding_matches_open_clip(model):
    images = torch.randn(2, 3, 32, 32)
    tokens = model.tokenize(["a red circle on farmland", "a lake"])
    pooled, _ = model.clip.encode_image(images)  # visual.output_tokens is on: (pooled, tokens)
    torch.testing.assert_close(model.encode_image(images).global_, pooled)
    torch.testing.assert_close(model.encode_text(tokens).global_, model.clip.encode_text(tokens))


def test_text_eos_token_is_among_projected_word_tokens(model):
    tokens = model.tokenize(["a small harbour"])
    text = model.encode_text(tokens)
    eos = int(tokens.argmax(dim=1))
    torch.testing.assert_close(text.tokens[0, eos], text.global_[0])


def test_same_seed_same_weights():
    a, b = create_model(TINY_MODEL, seed=3).model, create_model(TINY_MODEL, seed=3).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_unknown_model_and_missing_checkpoint_errors():
    with pytest.raises(UserError, match="unknown OpenCLIP model"):
        create_model("ViT-Z-99").model
    with pytest.raises(UserError, match="does not exist"):
        create_model(TINY_MODEL, "/nonexistent/weights.pt").model


def test_open_clip_checkpoint_file_is_loaded(tmp_path, model):
    path = tmp_path / "clip.pt"
    torch.save(model.clip.state_dict(), path)
    result = create_model(TINY_MODEL, str(path))
    assert result.recipe == ScoringRecipe()  # an OpenCLIP file holds no run config: the default recipe
    assert torch.equal(result.model.clip.visual.conv1.weight, model.clip.visual.conv1.weight)


def test_create_model_from_a_model_config():
    model = create_model(ModelConfig(name=TINY_MODEL, pretrained=None)).model
    assert model.encode_image(torch.randn(1, 3, 32, 32)).tokens.shape == (1, 16, 32)


def test_mask_keeps_token_id_zero_inside_a_caption(model):
    tokens = model.tokenize(["a beach !% near a road"])  # "!%" -> ids [0, 260]
    assert (tokens[0, 1:6] == 0).any(), "the tokenizer should produce id 0 inside this caption"
    mask = model.encode_text(tokens).mask[0]
    end = int(tokens[0].argmax())
    assert mask[: end + 1].all() and not mask[end + 1:].any()


def test_openai_weights_build_quickgelu_without_downloading(monkeypatch):
    """ViT-B-32 + openai must be built with QuickGELU; the download and weight loading are mocked (random weights)."""
    calls = []
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: calls.append(cfg) or "w.pt")
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **kwargs: calls.append(path))
    model = create_model("ViT-B-32", "openai").model
    assert calls and calls[-1] == "w.pt" and model.quick_gelu
    activations = {type(m).__name__ for m in model.modules()}
    assert "QuickGELU" in activations and "GELU" not in activations


def test_quickgelu_follows_the_tag_and_refuses_a_mismatch():
    assert resolve_quick_gelu("ViT-B-32", "openai") is True
    assert resolve_quick_gelu("ViT-B-32-quickgelu", "openai") is True
    assert resolve_quick_gelu("ViT-B-32", "laion2b_s34b_b79k") is False
    assert resolve_quick_gelu("ViT-B-32", None) is False  # random init: the architecture's own activation
    assert resolve_quick_gelu("ViT-B-32", None, True) is True
    with pytest.raises(UserError, match="trained with QuickGELU"):
        resolve_quick_gelu("ViT-B-32", "openai", False)
    with pytest.raises(UserError, match="trained with GELU"):
        resolve_quick_gelu("ViT-B-32", "laion2b_s34b_b79k", True)
    with pytest.raises(UserError, match="QuickGELU architecture"):
        resolve_quick_gelu("ViT-B-32-quickgelu", None, False)


def test_missing_pretrained_weights_are_a_user_error(monkeypatch):
    def offline(cfg, cache_dir=None):
        raise OSError("no connection")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(UserError, match="could not be downloaded"):
        create_model("ViT-B-32", "openai").model
