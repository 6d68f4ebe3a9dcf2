"""The encoders on ONNX Runtime: the export, its cache and the towers' outputs against PyTorch fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rsitr
from rsitr.errors import UserError
from rsitr.inference.encoder import Encoder
from rsitr.models import TINY_MODEL, create_model
from rsitr.models.onnx_export import exported
from rsitr.models.onnx_model import OnnxRuntimeModel, on_runtime
from rsitr.models.onnx_runtime import TEXT_FILE, OnnxTowers, choose_runtime, find_export, onnx_cache_root
from rsitr.models.torch_towers import TorchTowers

pytest.importorskip("onnxruntime")

DEMO = Path(rsitr.__file__).resolve().parent / "demo_data" / "ucm"
CAPTIONS = ("a baseball field next to green trees", "storage tanks", "many buildings and some green trees "
            "beside a road with cars &amp; a  river")
COSINE = 0.999
"""The issue's bar for ONNX Runtime's global embeddings against PyTorch fp32's (they agree to ~1e-6 in practice)."""


def _cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return (first * second).sum(-1) / np.linalg.norm(first, axis=-1) / np.linalg.norm(second, axis=-1)


def _images() -> list[Image.Image]:
    # 256x255 (a shorter side to resize) and square ones
    return [Image.open(DEMO / name) for name in ("baseballdiamond_04.jpg", "harbor_01.jpg", "forest_01.jpg")]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RSITR_CACHE_DIR", str(tmp_path))
    return onnx_cache_root()


def _assert_same_outputs(onnx: OnnxTowers, reference: TorchTowers) -> None:
    got, want = onnx.encode_images(_images()), reference.encode_images(_images())
    assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
    assert _cosines(got[0], want[0]).min() >= COSINE
    assert _cosines(got[1], want[1]).min() >= COSINE  # every patch token
    for caption in CAPTIONS:
        got, want = onnx.encode_text(caption), reference.encode_text(caption)
        np.testing.assert_array_equal(got[2], want[2])  # the same real length and mask
        assert _cosines(got[0], want[0]) >= COSINE
        assert _cosines(got[1], want[1]).min() >= COSINE


def test_tiny_clip_model_exports_and_matches_pytorch_fp32(cache):
    loaded = create_model(TINY_MODEL, seed=0)
    directory = exported(loaded, "tiny")
    assert directory == cache / "tiny" and find_export("tiny") == directory
    onnx = OnnxTowers(directory, lambda texts: loaded.model.tokenize(texts).numpy())  # CLIP's own tokenizer
    _assert_same_outputs(onnx, TorchTowers(loaded.model, precision="fp32"))


def test_preprocessing_without_torchvision_is_openclips(cache):
    loaded = create_model(TINY_MODEL, seed=0)
    onnx = OnnxTowers(exported(loaded, "tiny"), lambda texts: loaded.model.tokenize(texts).numpy())
    for image in _images() + [Image.new("L", (40, 90), 128), Image.new("RGB", (90, 41), (10, 200, 30))]:
        want = loaded.model.preprocess_val(image.convert("RGB")).numpy()
        np.testing.assert_allclose(onnx.preprocess(image), want, atol=1e-5)


def test_damaged_export_is_rebuilt(cache):
    loaded = create_model(TINY_MODEL, seed=0)
    directory = exported(loaded, "tiny")
    text = directory / TEXT_FILE
    data = bytearray(text.read_bytes())
    data[len(data) // 2] ^= 0xFF
    text.write_bytes(bytes(data))
    assert find_export("tiny") is None and not directory.exists()  # found damaged: removed
    assert exported(loaded, "tiny") == directory and find_export("tiny") == directory


def test_default_model_onnx_matches_pytorch_fp32_with_its_own_tokenizer(cache):
    """The shipped default: a Hugging Face text tower, tokenized from tokenizer.json by `tokenizers` alone."""
    loaded = create_model()
    encoder = Encoder(loaded, precision="fp32", runtime="onnx")
    assert encoder.runtime == "onnx" and encoder.model is None
    reference = TorchTowers(loaded.model, precision="fp32")
    _assert_same_outputs(OnnxTowers(encoder.towers.directory), reference)
    ids = encoder.towers._tokenize(CAPTIONS)
    np.testing.assert_array_equal(ids, loaded.model.tokenize(CAPTIONS).numpy())
    # found again by the names an index records, without loading the model
    again = Encoder.load(None, None, runtime="auto")
    assert again.runtime == "onnx" and again.towers.directory == encoder.towers.directory
    assert again.fingerprint().matches(Encoder(loaded, precision="fp32", runtime="torch").fingerprint())


def test_runtime_choice():
    assert choose_runtime("auto", "cpu", "bf16") == "torch"  # ONNX Runtime runs fp32 only
    assert choose_runtime("auto", "cpu", "auto") == "onnx"
    assert choose_runtime("torch", "cpu", "auto") == "torch"
    with pytest.raises(UserError, match="fp32"):
        choose_runtime("onnx", "cpu", "bf16")
    with pytest.raises(UserError, match="unknown runtime"):
        choose_runtime("tpu")


def test_random_weights_run_on_torch_under_auto_and_are_refused_on_onnx(cache):
    loaded = create_model(TINY_MODEL, seed=0)
    assert Encoder(loaded, runtime="auto").runtime == "torch"  # no weights file to key an export by
    with pytest.raises(UserError, match="`runtime='onnx'`: .*no weights file"):
        Encoder(loaded, runtime="onnx")


def test_the_batch_pipelines_model_runs_its_towers_on_onnx_runtime(cache):
    """What `rsitr embed`, `classify` and `eval` encode with: the model's own preprocessing, tokenizer and masks around
    ONNX Runtime's towers, as close to PyTorch fp32 as the towers themselves."""
    import torch

    loaded = create_model()
    assert on_runtime(loaded, runtime="torch") is loaded.model
    model = on_runtime(loaded, precision="fp32", runtime="onnx")
    assert isinstance(model, OnnxRuntimeModel) and model.image_cache is None
    assert model.eval() is model and model.embed_dim == loaded.model.embed_dim  # the rest is the model's
    pixels = torch.stack([loaded.model.preprocess_val(image.convert("RGB")) for image in _images()])
    ids = loaded.model.trim(loaded.model.tokenize(list(CAPTIONS)))
    with torch.no_grad():
        want_image, want_text = loaded.model.encode_image(pixels), loaded.model.encode_text(ids)
    got_image, got_text = model.encode_image(pixels), model.encode_text(ids)
    assert _cosines(got_image.global_.numpy(), want_image.global_.numpy()).min() >= COSINE
    assert _cosines(got_image.tokens.numpy(), want_image.tokens.numpy()).min() >= COSINE
    assert _cosines(got_text.global_.numpy(), want_text.global_.numpy()).min() >= COSINE
    torch.testing.assert_close(got_text.mask, want_text.mask)
    with pytest.raises(UserError, match="fp32"):
        on_runtime(loaded, precision="bf16", runtime="onnx")
