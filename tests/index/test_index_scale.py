"""Index types for large archives: IVF-PQ with a float16 re-score, and ``auto``'s choice from the archive's size."""

from __future__ import annotations

import numpy as np
import pytest

from rsitr.retrieval import vector_index
from support.index import clustered


def test_auto_is_exact_for_small_archives_and_ivfpq_for_large_ones():
    assert vector_index.choose_index_type(0) == "exact"
    assert vector_index.choose_index_type(vector_index.AUTO_EXACT_BELOW - 1) == "exact"
    assert vector_index.choose_index_type(vector_index.AUTO_EXACT_BELOW) == "ivfpq"
    assert vector_index.resolve_index_type("auto", 5_000_000) == "ivfpq"
    assert vector_index.resolve_index_type("hnsw", 10) == "hnsw"  # a chosen type is kept


def test_large_ivf_indexes_probe_more_cells_by_default():
    # 16 probes of 1,000 cells found 0.897 of the exact top-10 at 1M vectors; one cell in 32 found 0.968
    assert vector_index.default_probes(316) == vector_index.DEFAULT_NPROBE == 16  # ~100k vectors
    assert vector_index.default_probes(1_000) == 32  # ~1M
    assert vector_index.default_probes(5_477) == 172  # ~30M
    assert vector_index.default_probes(8) == 8  # never more than there are
    index = vector_index.build_vector_index(clustered(4_000, dim=16), np.arange(4_000), "ivf")
    assert vector_index._inner(index).nprobe == vector_index.default_probes(vector_index.ivf_cells(4_000))
    vector_index.set_search_breadth(index, nprobe=3)
    assert vector_index._inner(index).nprobe == 3


def test_pq_subquantizers_divide_the_dimension():
    assert vector_index.pq_subquantizers(256) == 64 and vector_index.pq_subquantizers(512) == 128
    assert all(dim % vector_index.pq_subquantizers(dim) == 0 for dim in (7, 100, 250, 768))


def test_ivfpq_finds_the_exact_top_10_and_survives_a_save(tmp_path):
    vectors = clustered(12_000, dim=32)
    ids = np.arange(len(vectors), dtype=np.int64) * 3 + 7  # the caller's ids come back, not positions
    queries = clustered(50, dim=32, seed=1)
    _, exact = vector_index.search_vectors(vector_index.build_vector_index(vectors, ids, "exact"), queries, 10)
    index = vector_index.build_vector_index(vectors, ids, "ivfpq")
    assert "Refine" in type(vector_index.faiss.downcast_index(index.index)).__name__
    _, found = vector_index.search_vectors(index, queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    path = tmp_path / "vectors.faiss"
    vector_index.save_atomic(index, path)
    assert path.stat().st_size < len(vectors) * (32 * 4)  # smaller than the float32 vectors alone
    loaded = vector_index.load(path, len(vectors), 32, "ivfpq")
    np.testing.assert_array_equal(vector_index.search_vectors(loaded, queries, 10)[1], found)
    with pytest.raises(vector_index.DamagedVectorsError, match="not a FAISS index"):
        vector_index.load(path, len(vectors) + 1, 32, "ivfpq")
    path.write_bytes(path.read_bytes()[: len(vectors) * 32])
    with pytest.raises(vector_index.DamagedVectorsError, match="truncated"):
        vector_index.load(path, len(vectors), 32, "ivfpq")


def test_small_ivfpq_and_auto_indexes_are_exact():
    vectors = clustered(500)
    for index_type in ("ivfpq", "auto"):
        index = vector_index.build_vector_index(vectors, np.arange(500), index_type)
        assert isinstance(vector_index.faiss.downcast_index(index.index), vector_index.faiss.IndexFlatIP)
    with pytest.raises(ValueError, match="auto, exact, ivf, hnsw, ivfpq"):
        vector_index.build_vector_index(vectors, np.arange(500), "fast")
