"""The :class:`rsitr.index.vector_store.VectorStore` contract, run over every backend: what one saves from the record
opens again, holds the record's vectors, finds the exact top-k and reads them back in batches; a damaged store is
a :class:`DamagedVectorsError` naming it, never a crash."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rsitr.index.store import MetadataStore, NewChip
from rsitr.index.tiling import Window
from rsitr.index.vector_store import BACKENDS, DamagedVectorsError, FaissVectors, in_memory, vector_backend

COUNT, DIM = 40, 16


@pytest.fixture
def record(tmp_path: Path) -> MetadataStore:
    """An index database of ``COUNT`` chips (of two files) with random unit vectors."""
    store = MetadataStore(tmp_path)
    store.set_meta(fingerprint={"dim": DIM})
    vectors = np.random.default_rng(0).normal(size=(COUNT, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    files = [store.add_file(name, 1, 1, "0" * 64, 640, 320, None) for name in ("a.png", "b.png")]
    store.add_chips([NewChip(files[i % 2], Window(32 * i, 0, 32, 32), None, vector, None)
                     for i, vector in enumerate(vectors)], files)
    yield store
    store.close()


def backends() -> list:
    """Every backend; LanceDB's tests skip where its extra is not installed."""
    lance = pytest.mark.skipif(not _installed("lancedb"), reason="needs the lancedb extra")
    return [pytest.param(name, marks=lance if name == "lancedb" else ()) for name in BACKENDS]


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def damage(backend, directory: Path) -> None:
    if backend == "faiss":
        (directory / "vectors.faiss").write_bytes((directory / "vectors.faiss").read_bytes()[:100])
    else:
        shutil.rmtree(directory / "vectors.lance")


@pytest.mark.parametrize("backend", backends())
def test_a_saved_store_holds_the_record_and_finds_its_exact_top_k(tmp_path, record, backend):
    stores = vector_backend(backend, tmp_path)
    memory = in_memory(record, "exact")
    saved = stores.save(record, "exact", memory)
    opened = stores.open(record, DIM, "exact")
    ids, vectors = record.embeddings()
    queries = vectors[:5] + np.random.default_rng(1).normal(scale=0.1, size=(5, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for store in (saved, opened, memory):
        assert store.count() == COUNT
        assert stores.sound(store, record) or backend == "lancedb" and isinstance(store, FaissVectors)
        for query in queries:
            expected = np.argsort(-(vectors @ query), kind="stable")[:7]
            found, scores = store.search(query, 7)
            np.testing.assert_array_equal(found, ids[expected])
            np.testing.assert_allclose(scores, vectors[expected] @ query, atol=1e-5)
        assert len(store.search(queries[0], COUNT + 5)[0]) == COUNT  # no padding past the last vector
        batches = list(store.batches(16))
        assert [len(batch_ids) for batch_ids, _ in batches] == [16, 16, 8]
        read_ids = np.concatenate([batch_ids for batch_ids, _ in batches])
        read = np.concatenate([batch for _, batch in batches])[np.argsort(read_ids)]
        np.testing.assert_array_equal(np.sort(read_ids), ids)
        np.testing.assert_allclose(read, vectors, atol=0)
    recorded = stores.recorded_as("exact")
    assert stores.records(recorded, "exact")
    assert stores.records(recorded, "ivf") == (backend == "lancedb")  # FAISS records its index type, LanceDB its place
    assert not vector_backend(BACKENDS[BACKENDS.index(backend) - 1], tmp_path).records(recorded, "exact")


@pytest.mark.parametrize("backend", backends())
def test_a_damaged_store_is_an_error_naming_it(tmp_path, record, backend):
    stores = vector_backend(backend, tmp_path)
    stores.save(record, "exact", in_memory(record, "exact"))
    damage(backend, tmp_path)
    with pytest.raises(DamagedVectorsError, match="vectors.faiss" if backend == "faiss" else "vectors.lance"):
        stores.open(record, DIM, "exact")


def test_a_lancedb_store_that_differs_from_the_record_is_not_sound(tmp_path, record):
    pytest.importorskip("lancedb")
    from rsitr.index.lance_store import LanceVectors

    stores = vector_backend("lancedb", tmp_path)
    ids, vectors = record.embeddings()
    LanceVectors.write(str(tmp_path / "vectors.lance"), ids, vectors * 0.5)
    assert not stores.sound(stores.open(record, DIM, "exact"), record)
    assert stores.sound(stores.save(record, "exact", in_memory(record, "exact")), record)


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="choose one of faiss, lancedb"):
        vector_backend("qdrant", Path("."))
