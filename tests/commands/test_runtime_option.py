"""``--runtime`` on every command that encodes a batch (`rsitr embed`, `classify`, `eval`): the same answers from ONNX
Runtime as from PyTorch fp32, through the one runtime choice an index uses (rsitr.models.onnx_export.runtime_export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsitr.cli import main
from rsitr.models import TINY_MODEL, create_model
from rsitr.models.onnx_runtime import onnx_cache_root

pytest.importorskip("onnxruntime")

SCORE_ATOL = 1e-4
"""ONNX Runtime's and PyTorch's fp32 embeddings of the tiny model agree to ~1e-6; its scores to well within this."""


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    """The tiny model's weights in a file (an ONNX export is keyed by the weights file), and a fresh ONNX cache."""
    monkeypatch.setenv("RSITR_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.pt"
    torch.save(create_model(TINY_MODEL, seed=0).model.clip.state_dict(), path)
    return path


def _runs(weights: Path, argv: list[str]) -> dict[str, bool]:
    """Run ``argv`` with ``--runtime torch --precision fp32`` and then ``--runtime onnx``: whether each left an export
    in the cache (the torch run must not, the onnx run must)."""
    exported = {}
    for runtime in ("torch", "onnx"):
        extra = ["--precision", "fp32"] if runtime == "torch" else []
        assert main([*argv(runtime), "--model", TINY_MODEL, "--pretrained", str(weights), "--runtime", runtime,
                     *extra, "--no-progress"]) == 0
        exported[runtime] = any(onnx_cache_root().glob("*/manifest.json"))
    return exported


def test_embed_on_either_runtime(weights, synthetic_caption_file, tmp_path):
    import pyarrow.parquet as pq

    images = synthetic_caption_file.parent / "images"
    exported = _runs(weights, lambda runtime: ["embed", str(synthetic_caption_file), "--images", str(images),
                                               "--out", str(tmp_path / runtime), "--dtype", "fp32"])
    assert exported == {"torch": False, "onnx": True}
    tables = {runtime: pq.read_table(tmp_path / runtime).to_pydict() for runtime in ("torch", "onnx")}
    assert tables["onnx"]["id"] == tables["torch"]["id"]
    for column in ("image_embedding", "text_embedding"):
        np.testing.assert_allclose(np.array(tables["onnx"][column]), np.array(tables["torch"][column]),
                                   atol=SCORE_ATOL, err_msg=column)


def test_classify_on_either_runtime(weights, class_folders, tmp_path):
    exported = _runs(weights, lambda runtime: ["classify", str(class_folders), "--out", str(tmp_path / f"{runtime}.json")])
    assert exported == {"torch": False, "onnx": True}
    got, want = (json.loads((tmp_path / f"{runtime}.json").read_text()) for runtime in ("onnx", "torch"))
    for mine, theirs in zip(got["predictions"], want["predictions"], strict=True):
        assert mine["path"] == theirs["path"]
        np.testing.assert_allclose([hit["score"] for hit in mine["top"]], [hit["score"] for hit in theirs["top"]],
                                   atol=SCORE_ATOL)


def test_eval_on_either_runtime(weights, synthetic_caption_file, tmp_path):
    images = synthetic_caption_file.parent / "images"
    exported = _runs(weights, lambda runtime: ["eval", "--data", str(synthetic_caption_file), "--images", str(images),
                                               "--split", "test", "--out", str(tmp_path / runtime)])
    assert exported == {"torch": False, "onnx": True}
    got, want = (json.loads((tmp_path / runtime / "results.json").read_text())["results"][f"{TINY_MODEL} (tiny.pt)"]
                 for runtime in ("onnx", "torch"))
    assert got == pytest.approx(want, abs=1e-6)  # the same ranks: scores agree far closer than the tiny model's gaps
