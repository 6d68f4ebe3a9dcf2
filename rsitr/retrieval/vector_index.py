"""FAISS indexes over L2-normalised global embeddings (inner product = cosine), keyed by the caller's ids.

- ``exact``: ``IndexFlatIP``, brute force; right up to a few hundred thousand vectors.
- ``ivf``: ``IndexIVFFlat`` with ``nlist`` k-means cells (default ``~ sqrt(N)``), ``nprobe`` of them searched.
- ``hnsw``: ``IndexHNSWFlat`` graph (``M`` = 32 by default), ``efSearch`` candidates per query.

Both users share this module: the search product (ids are chip ids; the index is always rebuilt from the
vectors in SQLite rather than patched in place, as HNSW cannot delete, and saved through a temporary file
and ``os.replace`` so that a reader or a killed writer never sees a half-written file) and FTF's stage 1
(ids are gallery positions). Every index is wrapped in ``IndexIDMap2`` so results are those ids.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import faiss
import numpy as np

from rsitr.atomic import write_atomic

INDEX_TYPES = ("exact", "ivf", "hnsw")
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 40
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
_IVF_TRAINING_POINTS_PER_CELL = 64


def ivf_cells(count: int) -> int:
    return max(1, min(count, round(math.sqrt(count))))


def build_vector_index(vectors: np.ndarray, ids: np.ndarray, index_type: str = "exact", seed: int = 0,
                       nlist: int | None = None, hnsw_neighbours: int = HNSW_NEIGHBOURS) -> faiss.Index:
    """An ``IndexIDMap2`` over ``vectors [N, D]`` (float32, normalised) with ``ids [N]``.

    ``nlist`` is the number of IVF cells (default :func:`ivf_cells`), ``hnsw_neighbours`` HNSW's ``M``.
    An empty ``ivf`` index cannot be trained, so it falls back to ``exact`` until there are vectors.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if index_type == "ivf" and len(vectors):
        nlist = nlist or ivf_cells(len(vectors))
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if len(vectors) > nlist * _IVF_TRAINING_POINTS_PER_CELL:
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(len(vectors), nlist * _IVF_TRAINING_POINTS_PER_CELL, replace=False)]
        inner.cp.seed = seed
        inner.train(sample)
    elif index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw_neighbours, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    set_search_breadth(index)
    return index


def _inner(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def set_search_breadth(index: faiss.Index, nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH) -> None:
    """Search-time recall/speed knobs: IVF cells probed, HNSW candidate list size (no effect on ``exact``)."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(nprobe, inner.nlist)
    elif isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search


def search_vectors(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and ids ``[Q, min(k, N)]`` of the best matches; FAISS pads with id ``-1`` when it finds fewer.

    HNSW returns at most ``efSearch`` candidates per query, so its search breadth is raised to ``k`` when smaller.
    """
    k = min(k, index.ntotal)
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    inner = _inner(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = max(inner.hnsw.efSearch, k)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def save_atomic(index: faiss.Index, path: Path) -> None:
    write_atomic(path, lambda temporary: faiss.write_index(index, temporary))


class DamagedVectorsError(ValueError):
    """A saved index file whose header or size does not fit the vectors it should hold, or that FAISS cannot read."""


_HEADER = struct.Struct("<4siq")
"""The start of a saved ``IndexIDMap2``: its four-character code, the dimension and the number of vectors."""


def load(path: Path, count: int, dim: int) -> faiss.Index:
    """Read an index saved by :func:`save_atomic` that should hold ``count`` vectors of ``dim`` dimensions.

    The header and the file size are checked against them before FAISS reads (and allocates) anything, so a
    truncated, zeroed or foreign file raises :class:`DamagedVectorsError` instead of a crash or a huge allocation.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise DamagedVectorsError(f"{path.name} is truncated ({size} bytes)")
    code, stored_dim, stored_count = _HEADER.unpack(header)
    if code != b"IxM2" or (stored_dim, stored_count) != (dim, count):
        raise DamagedVectorsError(f"{path.name} is not a FAISS index of {count} vectors of {dim} dimensions (header "
                                  f"{header[:4]!r}, {stored_dim} dimensions, {stored_count} vectors)")
    if size < count * (dim * 4 + 8):  # every stored vector and its id, at the least
        raise DamagedVectorsError(f"{path.name} is truncated ({size:,} bytes for {count} vectors of {dim} dimensions)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:  # FAISS's read errors
        raise DamagedVectorsError(f"{path.name} cannot be read ({str(err).splitlines()[0][:200]})") from None
    set_search_breadth(index)
    return index
