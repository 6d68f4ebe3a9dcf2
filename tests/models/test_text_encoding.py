"""Captions encoded at their real length equal the full-context encoding; the precision setting and its fallbacks."""

from __future__ import annotations

import warnings

import pytest
import torch

from rsitr.models import precision as precision_module
from rsitr.config import ConfigError, load_config
from rsitr.errors import UserError
from rsitr.models import TINY_MODEL, RetrievalCLIP, create_model
from rsitr.models.encoding import encode_captions, trim_padding
from rsitr.models.precision import resolve_precision
from rsitr._compat import open_clip

CAPTIONS = ["a lake", "many buildings and green trees are around a playground with a running track and a pool",
            "", "a white airplane is parked at the airport next to two others", "bare land",
            "several boats are parked in the harbour near a bridge", "a beach !% near a road", "dense forest"]


def small_77_context_model() -> RetrievalCLIP:
    """A randomly initialised small CLIP with the real 77-token context and tokenizer."""
    torch.manual_seed(0)
    clip = open_clip.model.CLIP(
        embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=4, layers=3))
    return RetrievalCLIP(clip, open_clip.get_tokenizer("ViT-B-32"), None, None, "small-77").eval()


@pytest.fixture(scope="module", params=["tiny", "small-77"])
def model(request) -> RetrievalCLIP:
    return create_model(TINY_MODEL).model.eval() if request.param == "tiny" else small_77_context_model()


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_trimmed_sorted_encoding_equals_full_context(model, batch_size):
    captions = CAPTIONS[::-1] + CAPTIONS[::2]  # mixed lengths, repeats, no sorted order
    with torch.no_grad():
        full = model.encode_text(model.tokenize(captions))
    trimmed = encode_captions(model, captions, batch_size=batch_size)
    length = trimmed.tokens.shape[1]
    assert length == int(full.mask.sum(dim=1).max()) < full.tokens.shape[1]
    torch.testing.assert_close(trimmed.global_, full.global_, atol=1e-5, rtol=1e-5)
    assert torch.equal(trimmed.mask, full.mask[:, :length]) and not full.mask[:, length:].any()
    real = trimmed.mask.unsqueeze(-1)
    torch.testing.assert_close(trimmed.tokens * real, full.tokens[:, :length] * real, atol=1e-5, rtol=1e-5)


def test_trim_padding_cuts_aligned_tensors_to_the_longest_real_caption(model):
    tokens = model.tokenize(["a lake", "a white airplane is parked at the airport"])
    labels = torch.arange(tokens.numel()).view(tokens.shape)
    cut, cut_labels = trim_padding(model, tokens, labels)
    assert cut.shape[1] == cut_labels.shape[1] == 10  # start + 8 words + end
    assert torch.equal(cut, tokens[:, :10]) and torch.equal(cut_labels, labels[:, :10])


def test_keep_padding_encodes_the_full_context(model):
    """For a local score that counts padding (MethodConfig.local_include_padding) nothing may be trimmed."""
    with torch.no_grad():
        full = model.encode_text(model.tokenize(CAPTIONS))
    kept = encode_captions(model, CAPTIONS, batch_size=3, keep_padding=True)
    torch.testing.assert_close(kept.tokens, full.tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(kept.mask, full.mask)


def test_no_captions(model):
    empty = encode_captions(model, [])
    assert empty.global_.shape == (0, model.embed_dim) and empty.tokens.shape[0] == empty.mask.shape[0] == 0


def test_auto_precision_and_clean_fallback_without_bf16(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="no native bf16"):
        assert resolve_precision("bf16", "cpu") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", "cpu") == resolve_precision("bf16", "cpu") == "bf16"


def test_bad_precisions_are_user_errors():
    with pytest.raises(UserError, match="choose one of auto, fp32, bf16, fp16"):
        resolve_precision("fp64", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_config(overrides=["precision=half", "data.synthetic.n_images=4"])
    assert load_config(overrides=["data.synthetic.n_images=4"]).precision == "auto"


def test_bf16_encoding_returns_float32_close_to_fp32(model):
    exact = encode_captions(model, CAPTIONS)
    fast = encode_captions(model, CAPTIONS, precision="bf16")
    assert fast.global_.dtype == fast.tokens.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(fast.global_, exact.global_, dim=-1)
    assert cosine.min() > 0.99
