"""Vectors as Arrow columns: a matrix ``[N, D]`` is a fixed-size list column of ``D`` values per row, as
clip-retrieval's Parquet shards and LanceDB tables hold them. The one builder and the one reader, for ``rsitr
embed``'s shards, the index's chip shards (:mod:`.chip_shards`) and the LanceDB table (:mod:`.lance_store`)."""

from __future__ import annotations

import numpy as np


def vector_column(vectors: np.ndarray, dtype: type = np.float32):
    """``vectors [N, D]`` (or ``[N, ...]``, flattened per row) as a fixed-size list array of ``dtype`` values."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=dtype)
    width = int(np.prod(vectors.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width)


def vector_matrix(column) -> np.ndarray:
    """A fixed-size list column (array or chunked array) as a matrix ``[N, D]`` of its own value type."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
