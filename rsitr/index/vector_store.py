"""Where an index's global vectors are searched: one interface, :class:`VectorStore`, with FAISS and LanceDB behind it.

A vector store is derived data. ``index.sqlite`` holds the record (:mod:`.store`); after each indexing run the store
is written from it and recorded (``vectors_type``, ``vectors_generation``), and searchers open it. A
:class:`VectorBackend` knows where its store lies and how it is opened, written and named in that record;
:func:`vector_backend` picks the one the index's settings name, so :class:`~rsitr.index.archive_index.ArchiveIndex`
never learns which. A store that cannot be opened, or answers what the record contradicts, is replaced by
:func:`in_memory`: a FAISS index built from the record. When written, a store records a SHA-256 digest of what it
holds (``vectors_digest``) and is checked against it when opened, so a changed vector is found even where no search
would return it (a damaged vector that scores low); a store written before the digest was recorded has none to
check, and the next indexing run writes it anew with one.

- ``faiss``: ``vectors.faiss`` in the index folder (:mod:`rsitr.retrieval.vector_index`: header and size checked
  before FAISS reads it; the digest is the file's); its ``batches`` come from the record.
- ``lancedb``: a LanceDB table (:mod:`.lance_store`) at the settings' ``vector_uri``, by default
  ``vectors.lance`` in the index folder, recorded by that name (so the index is found however its folder is reached);
  the digest is of its rows (:func:`~rsitr.index.lance_store.content_digest`), so opening reads it whole.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from rsitr.index.lance_store import LanceVectors, content_digest
from rsitr.index.store import MetadataStore
from rsitr.retrieval import vector_index
from rsitr.retrieval.vector_index import DamagedVectorsError, resolve_index_type

__all__ = ["BACKENDS", "DamagedVectorsError", "FaissBackend", "FaissVectors", "LanceBackend", "VectorBackend",
           "VectorStore", "in_memory", "resolve_index_type", "vector_backend"]

BACKENDS = ("faiss", "lancedb")
FAISS_FILE = "vectors.faiss"
LANCE_DIRECTORY = "vectors.lance"
DIGEST_KEY = "vectors_digest"
"""The record's meta key of the saved store's SHA-256 digest."""
REBUILT_FILES = (FAISS_FILE,)
"""Files in the index folder that ``--rebuild`` deletes with the database (a LanceDB table is overwritten)."""


class VectorStore(Protocol):
    """Unit vectors with chip ids, searched by cosine (inner product)."""

    def count(self) -> int:
        """The number of vectors held."""

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids ``[<=k]`` (int64) and cosines (float32) of the best matches of the unit ``query [D]``, best first."""

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every chip's id ``[n]`` and vector ``[n, D]``, at most ``batch_size`` at a time."""


class FaissVectors:
    """A FAISS index over the record's vectors (read from ``vectors.faiss`` or built in memory); :meth:`batches`
    reads the record, which holds the same vectors in full precision."""

    def __init__(self, index, record: MetadataStore) -> None:
        self.index = index
        self.record = record

    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = vector_index.search_vectors(self.index, query[None], k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.record.iter_embeddings(batch_size)


def in_memory(record: MetadataStore, index_type: str) -> FaissVectors:
    """A FAISS index of ``index_type`` built from every vector of the record."""
    ids, vectors = record.embeddings()
    return FaissVectors(vector_index.build_vector_index(vectors, ids, index_type), record)


class VectorBackend(ABC):
    """Where an index's saved vector store lies, and how it is named in the record, opened and written."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lies, for messages."""

    @abstractmethod
    def recorded_as(self, index_type: str) -> str:
        """What ``vectors_type`` records for a store written with ``index_type`` (``auto`` resolved)."""

    def records(self, recorded: str, index_type: str) -> bool:
        """Whether ``recorded`` (``vectors_type``) names this backend's store of ``index_type``."""
        return recorded == self.recorded_as(index_type)

    @abstractmethod
    def saved(self) -> bool:
        """Whether a saved store may be there to open (opening tells whether it is sound)."""

    @abstractmethod
    def open(self, record: MetadataStore, dim: int, index_type: str) -> VectorStore:
        """The saved store; :class:`~rsitr.retrieval.DamagedVectorsError` naming it when it is gone or
        cannot be read."""

    @abstractmethod
    def save(self, record: MetadataStore, index_type: str, current: VectorStore) -> VectorStore:
        """Write the store from the record (``current``: the store searched now, built from it) and return it."""

    def sound(self, store: VectorStore, record: MetadataStore) -> bool:
        """Whether an opened ``store`` holds exactly the record's vectors (a writer deciding to rewrite it): the
        opening checked its digest, where one is recorded (unless a backend checks more)."""
        return record.get_meta(DIGEST_KEY) is not None

    def verify(self, record: MetadataStore, digest: Callable[[], str]) -> None:
        """Refuse (:class:`DamagedVectorsError`) an opened store whose ``digest()`` is not the one recorded when it
        was written; a store written before digests were recorded is taken as it is."""
        recorded = record.get_meta(DIGEST_KEY)
        if recorded is None:
            return
        try:
            found = digest()
        except (OSError, ValueError, RuntimeError) as err:  # what FAISS and lance raise on unreadable files
            raise DamagedVectorsError(f"the vectors at {self.location} are damaged: they cannot be read whole "
                                      f"({str(err).strip().splitlines()[0][:200] if str(err).strip() else err!r})"
                                      ) from None
        if found != recorded:
            raise DamagedVectorsError(f"the vectors at {self.location} are damaged: not the ones written (their "
                                      f"SHA-256 differs from the one recorded in the index)")


class FaissBackend(VectorBackend):
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / FAISS_FILE

    @property
    def location(self) -> str:
        return str(self.path)

    def recorded_as(self, index_type: str) -> str:
        return index_type

    def saved(self) -> bool:
        return self.path.is_file()

    def open(self, record: MetadataStore, dim: int, index_type: str) -> FaissVectors:
        index = vector_index.load(self.path, record.chip_count(), dim, index_type)  # header and size first
        self.verify(record, self._digest)
        return FaissVectors(index, record)

    def save(self, record: MetadataStore, index_type: str, current: VectorStore) -> FaissVectors:
        if not isinstance(current, FaissVectors):
            current = in_memory(record, index_type)
        vector_index.save_atomic(current.index, self.path)
        record.set_meta(**{DIGEST_KEY: self._digest()})
        return current

    def _digest(self) -> str:
        with self.path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()


class LanceBackend(VectorBackend):
    def __init__(self, directory: Path, uri: str | None) -> None:
        self.uri = uri
        self.directory = Path(directory)

    @property
    def location(self) -> str:
        return self.uri or str(self.directory / LANCE_DIRECTORY)

    def recorded_as(self, index_type: str) -> str:
        return f"lancedb:{self.uri or LANCE_DIRECTORY}"

    def saved(self) -> bool:
        return True  # an object-store URI cannot be told from a path: opening it tells

    def open(self, record: MetadataStore, dim: int, index_type: str) -> LanceVectors:
        try:
            store = LanceVectors.open(self.location)
        except (OSError, ValueError, RuntimeError) as err:  # gone, or not a table (lancedb raises these)
            raise DamagedVectorsError(f"the LanceDB vectors at {self.location} cannot be opened "
                                                   f"({str(err).splitlines()[0][:200]})") from None
        self.verify(record, store.content_digest)
        return store

    def save(self, record: MetadataStore, index_type: str, current: VectorStore) -> LanceVectors:
        ids, vectors = record.embeddings()
        store = LanceVectors.write(self.location, ids, vectors, record.bounds(), index=index_type != "exact")
        record.set_meta(**{DIGEST_KEY: content_digest(ids, vectors)})
        return store

    def sound(self, store: VectorStore, record: MetadataStore) -> bool:
        return super().sound(store, record) and isinstance(store, LanceVectors) and \
            store.holds(*record.embeddings())  # read whole


def vector_backend(backend: str, directory: Path, vector_uri: str | None = None) -> VectorBackend:
    """The backend named ``backend`` (one of :data:`BACKENDS`) of the index in ``directory``."""
    if backend == "lancedb":
        return LanceBackend(directory, vector_uri)
    if backend == "faiss":
        return FaissBackend(directory)
    raise ValueError(f"unknown vector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
