"""An index on either runtime: built on PyTorch and searched on ONNX Runtime (and the other way round) with the same
answers, and `rsitr search` / `rsitr serve` of an index importing no torch when the model's ONNX export is cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rsitr
from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.inference.encoder import EncodedText
from rsitr.index.searcher import fused_scores
from rsitr.models import ScoringRecipe
from rsitr.similarity import fuse, local_similarity

pytest.importorskip("onnxruntime")

DEMO = Path(rsitr.__file__).resolve().parent / "demo_data" / "ucm"
IMAGES = ("baseballdiamond_04.jpg", "forest_01.jpg", "harbor_01.jpg", "river_01.jpg", "storagetanks_01.jpg",
          "tenniscourt_01.jpg")
QUERIES = ("a baseball field", "a river through a forest", "a harbour with boats", "storage tanks")
HEAVY = ("torch", "torchvision", "open_clip", "transformers")
SCORE_ATOL = 1e-3
"""ONNX Runtime's and PyTorch's fp32 embeddings agree to ~1e-6; scores to well within this."""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """The default model's index of six demo images built on PyTorch fp32 (as before ONNX Runtime), in a fresh
    ONNX cache (the environment's, for the subprocesses too)."""
    base = tmp_path_factory.mktemp("onnx_search")
    images = base / "images"
    images.mkdir()
    for name in IMAGES:
        (images / name).write_bytes((DEMO / name).read_bytes())
    old = os.environ.get("RSITR_CACHE_DIR")
    os.environ["RSITR_CACHE_DIR"] = str(base / "cache")
    index, _ = ArchiveIndex.build(base / "torch.index", images, progress=False,
                                  options=BuildOptions(precision="fp32", runtime="torch"))
    index.close()
    yield base
    if old is None:
        os.environ.pop("RSITR_CACHE_DIR")
    else:
        os.environ["RSITR_CACHE_DIR"] = old


def _top(index: ArchiveIndex, query: str) -> tuple[list[int], np.ndarray]:
    hits = index.search(query, k=10)
    return [hit.chip_id for hit in hits], np.array([hit.score for hit in hits])


def test_an_index_built_on_pytorch_searches_the_same_on_onnx_runtime_and_back(built):
    on_torch = ArchiveIndex.open(built / "torch.index", precision="fp32", runtime="torch")
    on_onnx = ArchiveIndex.open(built / "torch.index", runtime="onnx")  # the fingerprint accepts it
    assert on_torch.encoder.runtime == "torch" and on_onnx.encoder.runtime == "onnx"
    for query in QUERIES:
        (want_ids, want), (got_ids, got) = _top(on_torch, query), _top(on_onnx, query)
        assert got_ids == want_ids, query
        np.testing.assert_allclose(got, want, atol=SCORE_ATOL, err_msg=query)
    on_torch.close()
    on_onnx.close()
    rebuilt, _ = ArchiveIndex.build(built / "onnx.index", built / "images", progress=False,
                                    options=BuildOptions(runtime="onnx"))
    np.testing.assert_allclose(rebuilt.store.embeddings()[1], ArchiveIndex.open(
        built / "torch.index", runtime="onnx").store.embeddings()[1], atol=SCORE_ATOL)
    rebuilt.close()
    assert ArchiveIndex.open(built / "onnx.index", precision="fp32", runtime="torch").encoder.runtime == "torch"


def _modules_after(code: str, built: Path) -> dict:
    """Run ``code`` (which prints its answer on the last line) in a fresh interpreter; the answer and the heavy
    modules it imported."""
    script = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=built, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return {"output": "\n".join(lines[:-1]), "modules": json.loads(lines[-1])}


def test_search_and_serve_import_no_torch_with_the_export_cached(built):
    ArchiveIndex.open(built / "torch.index", runtime="onnx").close()  # exports into the cache, if not there
    search = _modules_after("from rsitr.cli import main\nmain(['search', 'torch.index', 'a baseball field', "
                            "'--top-k', '3'])", built)
    assert search["modules"] == []
    assert "baseballdiamond_04.jpg" in search["output"].splitlines()[1]  # under the table's header
    serve = _modules_after(
        "from fastapi.testclient import TestClient\nfrom rsitr.api.app import create_app\n"
        "client = TestClient(create_app('torch.index'), base_url='http://localhost')\n"
        "answer = client.get('/api/search', params={'q': 'a harbour with boats', 'k': 3})\n"
        "print(answer.status_code, answer.json()['results'][0]['path'])", built)
    assert serve["modules"] == []
    assert serve["output"] == "200 harbor_01.jpg"
    refused = _modules_after("from rsitr.cli import main\nmain(['search', 'torch.index', 'a field', '--runtime', "
                             "'torch'])", built)
    assert "torch" in refused["modules"]  # the check above can see torch when it is imported


def test_numpy_rerank_is_the_local_similarity_of_one_query():
    generator = torch.Generator().manual_seed(0)
    chips = torch.randn(7, 5, 16, generator=generator)
    words = torch.randn(6, 16, generator=generator)
    mask = torch.tensor([True, True, True, True, False, False])
    global_scores = torch.rand(7, generator=generator)
    recipe = ScoringRecipe(local=True, global_weight=0.7, local_weight=0.3)
    query = EncodedText(np.zeros(16, np.float32), words.numpy(), mask.numpy())
    fused, local = fused_scores(global_scores.numpy(), chips.numpy(), query, recipe)
    want = local_similarity(chips, words[None], mask[None])[:, 0]
    np.testing.assert_allclose(local, want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused, fuse(global_scores, want, 0.7, 0.3).numpy(), rtol=1e-5, atol=1e-6)
