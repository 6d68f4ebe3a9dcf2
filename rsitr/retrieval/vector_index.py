"""FAISS indexes over L2-normalised global embeddings (inner product = cosine), keyed by the caller's ids.

- ``exact``: ``IndexFlatIP``, brute force; right up to a few hundred thousand vectors.
- ``ivf``: ``IndexIVFFlat`` with ``nlist`` k-means cells (default ``~ sqrt(N)``), ``nprobe`` of them searched.
- ``hnsw``: ``IndexHNSWFlat`` graph (``M`` = 32 by default), ``efSearch`` candidates per query.
- ``ivfpq``: IVF cells over product-quantised codes (``dim / 4`` bytes a vector), whose best candidates are
  re-scored against float16 copies of the vectors (``IndexRefine``): about half the RAM of the float32 types
  at the recall of IVF-Flat (``benchmarks/index_scale.py`` measures all four at 100k and 1M vectors).
- ``auto`` (not a FAISS type): :func:`choose_index_type` picks one from the number of vectors.

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

INDEX_TYPES = ("exact", "ivf", "hnsw", "ivfpq")
AUTO = "auto"
INDEX_CHOICES = (AUTO, *INDEX_TYPES)
AUTO_EXACT_BELOW = 200_000
"""``auto``: exact search below this many vectors (measured p50 under 10 ms at 100k, 256 dims, one thread), IVF-PQ
with a float16 re-score from there (see ``benchmarks/index_scale.py`` and docs/SCALE.md)."""
IVFPQ_MIN_VECTORS = 10_000
"""Below this an ``ivfpq`` index is exact: PQ's 256 centroids per sub-quantiser need thousands of training vectors."""
REFINE_FACTOR = 8
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 40
DEFAULT_NPROBE = 16
"""IVF cells probed at least; more on large indexes (:func:`default_probes`)."""
PROBED_FRACTION = 32
"""Probe at least one cell in this many: at 1M x 256 (1,000 cells) 16 probes gave recall@10 0.897 against exact and
32 gave 0.968 (benchmarks/results/index_scale_1m.json)."""
DEFAULT_EF_SEARCH = 64
_IVF_TRAINING_POINTS_PER_CELL = 64
_PQ_TRAINING_POINTS_PER_CENTROID = 40


def ivf_cells(count: int) -> int:
    return max(1, min(count, round(math.sqrt(count))))


def default_probes(cells: int) -> int:
    """IVF cells a search probes unless told: :data:`DEFAULT_NPROBE`, or one cell in :data:`PROBED_FRACTION` when
    that is more (a fixed count finds less of the true top-k as the cells multiply)."""
    return min(cells, max(DEFAULT_NPROBE, math.ceil(cells / PROBED_FRACTION)))


def choose_index_type(count: int) -> str:
    """The index type ``auto`` means for ``count`` vectors: ``exact`` while brute force is fast enough, then
    ``ivfpq`` (bounded RAM, recall@10 >= 0.95 against exact at the default probes; HNSW is as fast but keeps
    float32 vectors plus its graph, ~1.3 GB at 1M x 256)."""
    return "exact" if count < AUTO_EXACT_BELOW else "ivfpq"


def resolve_index_type(index_type: str, count: int) -> str:
    """``index_type``, with ``auto`` replaced by :func:`choose_index_type`'s choice for ``count`` vectors."""
    return choose_index_type(count) if index_type == AUTO else index_type


def pq_subquantizers(dim: int) -> int:
    """PQ sub-quantisers for ``dim``: one per 4 dimensions (one byte each), or the largest divisor below that."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


def min_bytes_per_vector(index_type: str, dim: int) -> int:
    """The fewest bytes a saved index of ``index_type`` holds per vector: the vector (float32, or float16 for
    ``ivfpq``'s re-score copy) and its id."""
    return (dim * 2 if index_type == "ivfpq" else dim * 4) + 8


def build_vector_index(vectors: np.ndarray, ids: np.ndarray, index_type: str = "exact", seed: int = 0,
                       nlist: int | None = None, hnsw_neighbours: int = HNSW_NEIGHBOURS) -> faiss.Index:
    """An ``IndexIDMap2`` over ``vectors [N, D]`` (float32, normalised) with ``ids [N]``.

    ``nlist`` is the number of IVF cells (default :func:`ivf_cells`), ``hnsw_neighbours`` HNSW's ``M``;
    ``auto`` is resolved by :func:`choose_index_type`. An empty ``ivf`` index cannot be trained, so it falls back
    to ``exact`` until there are vectors; so does ``ivfpq`` below :data:`IVFPQ_MIN_VECTORS`.
    """
    index_type = resolve_index_type(index_type, len(vectors))
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_CHOICES)}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if (index_type == "ivf" and len(vectors)) or (index_type == "ivfpq" and len(vectors) >= IVFPQ_MIN_VECTORS):
        nlist = nlist or ivf_cells(len(vectors))
        if index_type == "ivf":
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.cp.seed = seed
        else:
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_subquantizers(dim), 8,
                                   faiss.METRIC_INNER_PRODUCT)
            ivf.cp.seed = ivf.pq.cp.seed = seed
            # PQ's k-means of 256 centroids per sub-quantiser on 40 points each (faiss's floor is 39): more costs
            # minutes at 1M vectors for no measurable recall, as the float16 re-score fixes the order.
            ivf.pq.cp.max_points_per_centroid = _PQ_TRAINING_POINTS_PER_CENTROID
            inner = faiss.IndexRefine(ivf, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                                       faiss.METRIC_INNER_PRODUCT))
        sample = vectors
        if len(vectors) > nlist * _IVF_TRAINING_POINTS_PER_CELL:
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(len(vectors), nlist * _IVF_TRAINING_POINTS_PER_CELL, replace=False)]
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
    """The index under the id map, and under an ``IndexRefine`` its base (the one searched first)."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return faiss.downcast_index(inner.base_index) if isinstance(inner, faiss.IndexRefine) else inner


def set_search_breadth(index: faiss.Index, nprobe: int | None = None, ef_search: int = DEFAULT_EF_SEARCH,
                       refine_factor: int = REFINE_FACTOR) -> None:
    """Search-time recall/speed knobs: IVF cells probed (None: :func:`default_probes`), HNSW candidate list size,
    and for ``ivfpq`` how many PQ candidates per result are re-scored (``refine_factor * k``); no effect on
    ``exact``."""
    refine = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(refine, faiss.IndexRefine):
        refine.k_factor = refine_factor
    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = default_probes(inner.nlist) if nprobe is None else min(nprobe, inner.nlist)
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
    """Write ``index`` to ``path`` crash-safely, through a Python file: a full disk is then an ``OSError`` (one
    line on the command line), where FAISS's own file writer raises a ``RuntimeError`` of its C++ source."""
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))

    write_atomic(path, write)


class DamagedVectorsError(ValueError):
    """A saved index file whose header or size does not fit the vectors it should hold, or that FAISS cannot read."""


_HEADER = struct.Struct("<4siq")
"""The start of a saved ``IndexIDMap2``: its four-character code, the dimension and the number of vectors."""


def load(path: Path, count: int, dim: int, index_type: str = "exact") -> faiss.Index:
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
    if size < count * min_bytes_per_vector(index_type, dim):  # every stored vector and its id, at the least
        raise DamagedVectorsError(f"{path.name} is truncated ({size:,} bytes for {count} vectors of {dim} dimensions)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:  # FAISS's read errors
        raise DamagedVectorsError(f"{path.name} cannot be read ({str(err).splitlines()[0][:200]})") from None
    set_search_breadth(index)
    return index
