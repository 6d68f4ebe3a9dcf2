"""The chips' global vectors in a LanceDB table: the vector store several searchers (and machines) can share.

``rsitr index --backend lancedb`` keeps ``index.sqlite`` as the record of files, chips, tokens and vectors, and
writes the vectors (with each chip's bounding box) to a LanceDB table instead of ``vectors.faiss``: on a local
path (default ``<index>/vectors.lance``) or an object-store URI (``s3://``, ``gs://``, ``az://``) that every
searcher opens. Like the FAISS file it is derived data, rewritten from SQLite after each indexing run and
recorded with the database generation it holds.

Why LanceDB (and not Qdrant's local mode): it is embedded like SQLite + FAISS (no server), its table lives on
local disk or directly in an object store that many readers share, it stores Arrow columns, so the Parquet
shards of ``rsitr embed`` and the bounding boxes need no conversion, and its IVF-PQ index is the same family as
the FAISS ``ivfpq`` type. Qdrant's local mode is a single-process, in-memory/SQLite emulation meant for tests; a
shared Qdrant needs its server.

Scores: LanceDB's ``dot`` distance is ``1 - q . v``; vectors are unit length, so ``1 - distance`` is the cosine the
FAISS path returns. Below :data:`rsitr.retrieval.vector_index.AUTO_EXACT_BELOW` rows the table has no ANN index
and LanceDB scans it (exact: the same top-k as FAISS exact); from there an IVF-PQ index is built and searched
with ``nprobes`` cells and a ``refine_factor`` re-score of full vectors, as FAISS ``ivfpq`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from rsitr.errors import MissingExtraError
from rsitr.inference.columns import vector_column, vector_matrix
from rsitr.retrieval.vector_index import (REFINE_FACTOR, choose_index_type, default_probes, ivf_cells,
                                          pq_subquantizers)

TABLE = "chips"
VECTOR_COLUMN = "vector"
BOUNDS_COLUMNS = ("left", "bottom", "right", "top")


def import_lancedb():
    try:
        import lancedb
    except ImportError:
        raise MissingExtraError("`backend='lancedb'` needs the lancedb package: pip install 'rsitr[lancedb]'",
                                parameters=("backend",)) from None
    return lancedb


@dataclass(frozen=True)
class BoundingBox:
    """``(left, bottom, right, top)`` in the chips' CRS; a chip matches when its bounds lie inside it."""

    left: float
    bottom: float
    right: float
    top: float

    def where(self) -> str:
        return (f"left >= {float(self.left)!r} AND bottom >= {float(self.bottom)!r} AND right <= {float(self.right)!r}"
                f" AND top <= {float(self.top)!r}")


def content_digest(ids: np.ndarray, vectors: np.ndarray) -> str:
    """SHA-256 of rows ``ids [N]`` and ``vectors [N, D]`` in id order, as little-endian int64 and float32: what a
    table holds, whatever order its rows are stored in."""
    import hashlib

    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256(np.asarray(ids, "<i8")[order].tobytes())
    digest.update(np.ascontiguousarray(np.asarray(vectors, "<f4")[order]).tobytes())
    return digest.hexdigest()


class LanceVectors:
    """An opened LanceDB vector table: :meth:`write` it from the stored vectors, :meth:`search` it (a
    :class:`rsitr.index.vector_store.VectorStore`)."""

    def __init__(self, table) -> None:
        self.table = table
        self.ntotal = table.count_rows()
        self.indexed = bool(table.list_indices())

    def count(self) -> int:
        return self.ntotal

    @classmethod
    def open(cls, uri: str) -> LanceVectors:
        return cls(import_lancedb().connect(uri).open_table(TABLE))

    @classmethod
    def write(cls, uri: str, ids: np.ndarray, vectors: np.ndarray, bounds: np.ndarray | None = None,
              index: bool | None = None) -> LanceVectors:
        """Replace the table at ``uri`` with ``ids [N]``, unit ``vectors [N, D]`` and chip ``bounds [N, 4]`` (NaN
        where a chip has none); ``index`` builds the IVF-PQ index (default: when ``auto`` would leave exact)."""
        import pyarrow as pa

        lancedb = import_lancedb()
        count, dim = vectors.shape
        bounds = np.full((count, 4), np.nan) if bounds is None else np.asarray(bounds, np.float64)
        columns = {"id": pa.array(np.asarray(ids, np.int64)), VECTOR_COLUMN: vector_column(vectors, np.float32)}
        columns.update({name: pa.array(bounds[:, i]) for i, name in enumerate(BOUNDS_COLUMNS)})
        table = lancedb.connect(uri).create_table(TABLE, data=pa.table(columns), mode="overwrite")
        if index if index is not None else choose_index_type(count) != "exact":
            from lancedb.index import IvfPq

            table.create_index(VECTOR_COLUMN, config=IvfPq(distance_type="dot",
                                                           num_partitions=ivf_cells(count),
                                                           num_sub_vectors=pq_subquantizers(dim)))
        return cls(table)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every row's id ``[n]`` and vector ``[n, D]``, read from the table in batches of at most ``batch_size``."""
        for batch in self.table.search().select(["id", VECTOR_COLUMN]).limit(None).to_batches(batch_size):
            if batch.num_rows:
                yield batch.column("id").to_numpy().astype(np.int64), vector_matrix(batch.column(VECTOR_COLUMN))

    def content_digest(self) -> str:
        """:func:`content_digest` of the table's rows, read whole (a damaged file raises what lance raises)."""
        table = self.table.search().select(["id", VECTOR_COLUMN]).limit(None).to_arrow()
        return content_digest(table.column("id").to_numpy(), vector_matrix(table.column(VECTOR_COLUMN)))

    def holds(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Whether the table's rows are exactly ``ids [N]`` and ``vectors [N, D]`` (in any order), and readable: a
        full read, for a writer deciding whether to rewrite it."""
        try:
            table = self.table.to_arrow()
        except (OSError, ValueError, RuntimeError):  # what lance raises for missing, garbage or truncated files
            return False
        got_ids = table.column("id").to_numpy()
        got = vector_matrix(table.column(VECTOR_COLUMN))
        order = np.argsort(got_ids, kind="stable")
        return np.array_equal(got_ids[order], ids) and np.array_equal(got[order], vectors)

    def search(self, query: np.ndarray, k: int, bbox: BoundingBox | None = None, nprobes: int | None = None,
               refine_factor: int = REFINE_FACTOR) -> tuple[np.ndarray, np.ndarray]:
        """Ids ``[<=k]`` and cosines of the best matches of the unit ``query [D]``, best first; with ``bbox`` only
        chips inside it (filtered before the vector search, so ``k`` are found when ``k`` exist). ``nprobes``
        defaults to FAISS' IVF default for as many cells (:func:`default_probes`)."""
        if k <= 0 or self.ntotal == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        search = self.table.search(np.asarray(query, np.float32), vector_column_name=VECTOR_COLUMN)
        # _distance named: LanceDB warns (on stderr, each search) that a selection without it will drop it
        search = search.distance_type("dot").limit(k).select(["id", "_distance"])
        if self.indexed:
            probes = default_probes(ivf_cells(self.ntotal)) if nprobes is None else nprobes
            search = search.nprobes(probes).refine_factor(refine_factor)
        if bbox is not None:
            search = search.where(bbox.where(), prefilter=True)
        result = search.to_arrow()
        return (result.column("id").to_numpy().astype(np.int64),
                (1.0 - result.column("_distance").to_numpy()).astype(np.float32))
