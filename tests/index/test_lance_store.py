"""The LanceDB vector backend: the same top-10 as FAISS on the same vectors, bounding-box filters, and one error
line when the extra is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("lancedb")

from rsitr.cli import main  # noqa: E402
from rsitr.index import ArchiveIndex, BuildOptions  # noqa: E402
from rsitr.index.lance_store import BoundingBox, LanceVectors  # noqa: E402
from rsitr.retrieval import vector_index  # noqa: E402
from support.index import clustered  # noqa: E402
from support.index import CHIP_SETTINGS, make_archive, tiny_encoder  # noqa: E402
from support.errors import assert_user_error  # noqa: E402

QUERIES = ["a green field", "red roofs by a river", "many boats in a harbour", "a road through the forest"]


def top(hits) -> list[tuple[int, float]]:
    return [(hit.chip_id, round(hit.score, 5)) for hit in hits]


def test_lancedb_and_faiss_indexes_give_the_same_results(tmp_path):
    encoder = tiny_encoder()
    root = make_archive(tmp_path / "archive")
    faiss_index, _ = ArchiveIndex.build(tmp_path / "faiss", root, encoder=encoder, progress=False,
                                        options=BuildOptions(**CHIP_SETTINGS))
    lance_index, _ = ArchiveIndex.build(tmp_path / "lance", root, encoder=encoder, progress=False,
                                        options=BuildOptions(backend="lancedb", **CHIP_SETTINGS))
    assert (tmp_path / "lance" / "vectors.lance").is_dir() and not (tmp_path / "lance" / "vectors.faiss").exists()
    assert isinstance(lance_index._current_vectors(), LanceVectors)
    for query in QUERIES:
        for rerank in (True, False):
            assert top(lance_index.search(query, 10, rerank=rerank)) == top(faiss_index.search(query, 10,
                                                                                                rerank=rerank))
    chip = faiss_index.search(QUERIES[0], 1)[0].chip_id
    assert top(lance_index.search(like=chip, k=10)) == top(faiss_index.search(like=chip, k=10))
    lance_index.close()
    reopened = ArchiveIndex.open(tmp_path / "lance", encoder=encoder)  # a searcher opens the saved table
    assert isinstance(reopened._current_vectors(), LanceVectors)
    assert top(reopened.search(QUERIES[1], 10)) == top(faiss_index.search(QUERIES[1], 10))
    # Back to FAISS on update: nothing is re-encoded, the results stay.
    switched, report = ArchiveIndex.build(tmp_path / "lance", root, encoder=encoder, progress=False,
                                          options=BuildOptions(backend="faiss"))
    assert report.chips_encoded == 0 and top(switched.search(QUERIES[2], 10)) == top(faiss_index.search(QUERIES[2], 10))


def test_ivf_pq_table_finds_the_faiss_exact_top_10(tmp_path):
    vectors = clustered(12_000, dim=32)
    ids = np.arange(len(vectors), dtype=np.int64) * 5 + 1
    queries = clustered(30, dim=32, seed=1)
    exact = vector_index.build_vector_index(vectors, ids, "exact")
    table = LanceVectors.write(str(tmp_path / "v.lance"), ids, vectors, index=True)
    assert table.indexed
    recalls = []
    for query in queries:
        _, expected = vector_index.search_vectors(exact, query[None], 10)
        found, scores = table.search(query, 10, nprobes=32, refine_factor=20)
        recalls.append(len(set(found) & set(expected[0])) / 10)
        assert np.all(np.diff(scores) <= 1e-6)
    assert np.mean(recalls) >= 0.95


def test_bounding_box_filter_keeps_only_chips_inside(tmp_path):
    vectors = clustered(200, dim=16)
    bounds = np.stack([np.arange(200.0), np.zeros(200), np.arange(200.0) + 1, np.ones(200)], axis=1)
    bounds[7] = np.nan  # a chip without geographic bounds never matches a box
    table = LanceVectors.write(str(tmp_path / "v.lance"), np.arange(200), vectors, bounds)
    found, _ = table.search(vectors[50], 10, bbox=BoundingBox(0, 0, 20, 1))
    assert len(found) == 10 and set(found) <= set(range(20)) - {7}
    everything, _ = table.search(vectors[50], 5)
    assert everything[0] == 50


def test_missing_lancedb_extra_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lancedb", None)  # as if not installed
    root = make_archive(tmp_path / "archive")
    code = main(["index", str(root), "--out", str(tmp_path / "index"), "--backend", "lancedb"])
    assert_user_error(code, capsys.readouterr().err, "index", "pip install 'rsitr[lancedb]'")
    assert not (tmp_path / "index").exists()


class _RecordingTable:
    """A LanceDB table stand-in of ``rows`` indexed rows that records the probes a search asks for."""

    def __init__(self, rows: int) -> None:
        self.rows, self.probes = rows, None

    def count_rows(self) -> int:
        return self.rows

    def list_indices(self) -> list[str]:
        return ["vector_idx"]

    def search(self, *args, **kwargs):
        return self

    def distance_type(self, *args):
        return self

    def limit(self, *args):
        return self

    def select(self, *args):
        return self

    def refine_factor(self, *args):
        return self

    def nprobes(self, probes: int):
        self.probes = probes
        return self

    def to_arrow(self):
        import pyarrow as pa

        return pa.table({"id": pa.array([0], pa.int64()), "_distance": pa.array([0.0], pa.float32())})


@pytest.mark.parametrize("rows, probes", [(10_000, 16), (1_000_000, 32), (30_000_000, 172)])
def test_lancedb_probes_as_many_cells_as_faiss_ivf(rows, probes):
    table = _RecordingTable(rows)
    LanceVectors(table).search(np.ones(4, np.float32) / 2, 10)
    assert table.probes == probes == vector_index.default_probes(vector_index.ivf_cells(rows))
    LanceVectors(table).search(np.ones(4, np.float32) / 2, 10, nprobes=5)
    assert table.probes == 5
