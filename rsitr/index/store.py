"""The index's SQLite database: settings, files, chips with their vectors, and unreadable files.

Vectors live next to their metadata: each chip row holds its global embedding (float32) and, when
local tokens are kept, its patch tokens (float16, ``[P, D]``). A batch of chips and the files it
completes are written in one transaction, so a process killed at any point leaves a database in which
every chip has its vectors and a file is marked ``complete`` only once all its chips are in. The FAISS
index is derived data, rebuilt from these rows (see :mod:`rsitr.retrieval.vector_index`); the ``generation``
counter, bumped by every write, tells whether a saved FAISS file is current.

WAL journaling lets the web service read while an indexer writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from rsitr.errors import UserError
from rsitr.index.archive import Bounds
from rsitr.index.tiling import Window

DATABASE_NAME = "index.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    crs TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    acquired TEXT
);
CREATE TABLE IF NOT EXISTS chips (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    x INTEGER NOT NULL, y INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    left REAL, bottom REAL, right REAL, top REAL,
    embedding BLOB NOT NULL,
    tokens BLOB,
    UNIQUE (file_id, x, y, width, height)
);
CREATE TABLE IF NOT EXISTS failures (path TEXT PRIMARY KEY, error TEXT NOT NULL);
"""


ADDED_FILE_COLUMNS = {"acquired": "TEXT"}
"""Columns of ``files`` newer than the first schema: a writer adds them to an older index (NULL: not known); a
reader of one that has none reads NULL."""

MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER


def _row_ids(ids: Sequence[int]) -> list[int]:
    """The ids a row can have: those outside SQLite's integer range (client input) never exist."""
    return [row_id for row_id in ids if 0 <= row_id <= MAX_ROW_ID]


@dataclass(frozen=True)
class FileRecord:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    complete: bool


@dataclass(frozen=True)
class ChipRecord:
    id: int
    path: str
    window: Window
    bounds: Bounds | None
    crs: str | None
    source_stat: tuple[int, int]
    """``(size, mtime_ns)`` of the image file when it was indexed."""
    scene_size: tuple[int, int]
    """``(width, height)`` of the whole image in pixels."""
    acquired: str | None = None
    """When the image was acquired (:func:`rsitr.index.archive.acquisition_time`'s form); None: not known."""

    @property
    def whole_image(self) -> bool:
        """The chip is the whole image (not tiled)."""
        return self.window == Window(0, 0, *self.scene_size)


@dataclass(frozen=True)
class NewChip:
    """A chip encoded in this run, waiting to be written with its batch."""

    file_id: int
    window: Window
    bounds: Bounds | None
    embedding: np.ndarray
    tokens: np.ndarray | None


class NotAnIndexError(UserError, FileNotFoundError):
    """A folder given as an index holds no rsitr index database."""


def not_an_index(path: Path, why: str) -> str:
    """The message for a ``path`` given as an index that is none: a file, or a folder that ``rsitr index`` did not
    write. It does not advise indexing into ``path``, which may be the user's images or any other folder."""
    what = "a file, not an index folder" if path.is_file() else f"not an rsitr index ({why})"
    return (f"{path} is {what}: give the folder that `rsitr index --out` wrote, or build one with "
            f"`rsitr index IMAGES --out NEW_INDEX`")


class DamagedIndexError(UserError):
    """An index database that SQLite finds damaged (truncated, zeroed, overwritten): only a rebuild helps."""


_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class MetadataStore:
    """One SQLite connection, shared between threads behind a lock (the web service runs handlers in a pool)."""

    def __init__(self, directory: Path, read_only: bool = False) -> None:
        path = Path(directory) / DATABASE_NAME
        if read_only and not path.is_file():
            raise NotAnIndexError(not_an_index(Path(directory), f"no {DATABASE_NAME}"))
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._check(Path(directory), read_only)
        except BaseException:
            self._conn.close()
            raise
        self._conn.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
            with self._transaction() as conn:
                for name, kind in ADDED_FILE_COLUMNS.items():
                    if name not in self._file_columns():
                        conn.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")
                if self.get_meta("schema_version") is None:
                    self._set_meta("schema_version", SCHEMA_VERSION)
                    self._set_meta("generation", 0)
        self._acquired = "files.acquired" if "acquired" in self._file_columns() else "NULL"

    def _check(self, directory: Path, read_only: bool) -> None:
        """SQLite's quick check of the whole file (it reads every page once), before anything is read or written;
        a reader also needs the index's tables."""
        try:
            verdict = self._conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as err:
            if err.sqlite_errorcode not in _DAMAGED:
                raise  # locked, unreadable ...: the command line says what it is
            verdict = str(err)
        if verdict != "ok":
            raise DamagedIndexError(f"{directory / DATABASE_NAME} is damaged ({verdict}); rebuild the index with "
                                    f"`rsitr index IMAGES --out {directory} --model MODEL --rebuild`")
        if read_only and not self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchall():
            raise NotAnIndexError(not_an_index(directory, f"its {DATABASE_NAME} has no index tables"))

    def _file_columns(self) -> set[str]:
        return {row[1] for row in self._conn.execute("PRAGMA table_info(files)")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _transaction(self):
        store = self

        class _Transaction:
            def __enter__(self) -> sqlite3.Connection:
                store._lock.acquire()
                store._conn.execute("BEGIN IMMEDIATE")
                return store._conn

            def __exit__(self, exc_type, *_) -> None:
                try:
                    if exc_type is None:
                        store._conn.execute("COMMIT")
                    elif store._conn.in_transaction:  # SQLite ends it by itself after some errors (a full disk)
                        store._conn.execute("ROLLBACK")
                finally:
                    store._lock.release()

        return _Transaction()

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- meta ---------------------------------------------------------------------------------------------
    def get_meta(self, key: str):
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def _set_meta(self, key: str, value) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def set_meta(self, **values) -> None:
        with self._transaction():
            for key, value in values.items():
                self._set_meta(key, value)

    def _bump_generation(self) -> None:
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # -- files --------------------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        rows = self._query("SELECT id, path, size, mtime_ns, sha256, complete FROM files")
        return {row[1]: FileRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5])) for row in rows}

    def file(self, path: str) -> FileRecord | None:
        rows = self._query("SELECT id, path, size, mtime_ns, sha256, complete FROM files WHERE path = ?", (path,))
        return FileRecord(*rows[0][:5], bool(rows[0][5])) if rows else None

    def add_file(self, path: str, size: int, mtime_ns: int, sha256: str, width: int, height: int,
                 crs: str | None, acquired: str | None = None) -> int:
        """Register a file to be encoded (``complete`` = 0), replacing any earlier record and its chips."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM files WHERE path = ?", (path,))
            conn.execute("DELETE FROM failures WHERE path = ?", (path,))
            cursor = conn.execute(
                "INSERT INTO files (path, size, mtime_ns, sha256, width, height, crs, acquired) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (path, size, mtime_ns, sha256, width, height, crs, acquired))
            self._bump_generation()
            return int(cursor.lastrowid)

    def update_file_stat(self, file_id: int, size: int, mtime_ns: int) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, file_id))

    def remove_files(self, paths: Iterable[str]) -> None:
        """Drop files, their chips and their failure records (one transaction)."""
        with self._transaction() as conn:
            for path in paths:
                conn.execute("DELETE FROM files WHERE path = ?", (path,))
                conn.execute("DELETE FROM failures WHERE path = ?", (path,))
            self._bump_generation()

    def georeferenced_files(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM files WHERE crs IS NOT NULL")[0][0])

    def record_failure(self, path: str, error: str, keep: bool = False) -> None:
        """List ``path`` as unreadable, dropping whatever of it was indexed unless ``keep`` (a server that failed:
        the next run resumes the file)."""
        with self._transaction() as conn:
            if not keep:
                conn.execute("DELETE FROM files WHERE path = ?", (path,))
            conn.execute("INSERT OR REPLACE INTO failures VALUES (?, ?)", (path, error))
            self._bump_generation()

    def remove_failures_except(self, paths: set[str]) -> None:
        """Forget failures of files that are gone (the others are retried and re-recorded if they fail again)."""
        self.remove_failures([path for path, _ in self.failures() if path not in paths])

    def remove_failures(self, paths: Iterable[str]) -> None:
        """Forget failures of ``paths`` (read whole since, e.g. a remote file its server answers for again)."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM failures WHERE path = ?", [(p,) for p in paths])

    def failures(self) -> list[tuple[str, str]]:
        return [tuple(row) for row in self._query("SELECT path, error FROM failures ORDER BY path")]

    # -- chips --------------------------------------------------------------------------------------------
    def windows_of(self, file_id: int) -> set[Window]:
        rows = self._query("SELECT x, y, width, height FROM chips WHERE file_id = ?", (file_id,))
        return {Window(*row) for row in rows}

    def add_chips(self, chips: Sequence[NewChip], completed_file_ids: Iterable[int]) -> None:
        """Write a batch of encoded chips and mark the files it completes, atomically."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO chips (file_id, x, y, width, height, left, bottom, right, top, embedding, tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(c.file_id, c.window.x, c.window.y, c.window.width, c.window.height,
                  *(c.bounds or (None, None, None, None)),
                  np.ascontiguousarray(c.embedding, dtype=np.float32).tobytes(),
                  None if c.tokens is None else np.ascontiguousarray(c.tokens, dtype=np.float16).tobytes())
                 for c in chips])
            completed = [(i,) for i in completed_file_ids]
            conn.executemany("UPDATE files SET complete = 1 WHERE id = ?", completed)
            conn.executemany("DELETE FROM failures WHERE path = (SELECT path FROM files WHERE id = ?)", completed)
            self._bump_generation()

    def chip_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM chips")[0][0])

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """All chip ids ``[N]`` (int64) and global embeddings ``[N, D]`` (float32), ordered by id."""
        rows = self._query("SELECT id, embedding FROM chips ORDER BY id")
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, int(self.get_meta("fingerprint")["dim"])), dtype=np.float32)
        return ids, np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows])

    def iter_embeddings(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The chip ids ``[n]`` and global embeddings ``[n, D]`` in batches of at most ``batch_size``, ordered by id:
        every chip read once while only one batch is in memory (the lock is held per batch, so an indexing run may
        commit in between; its chips are read when their ids come after the batch)."""
        last = -1
        while True:
            rows = self._query("SELECT id, embedding FROM chips WHERE id > ? ORDER BY id LIMIT ?", (last, batch_size))
            if not rows:
                return
            last = rows[-1][0]
            yield (np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
                   np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows]))

    def chip_ids(self) -> np.ndarray:
        """Every chip id ``[N]`` (int64), ascending."""
        rows = self._query("SELECT id FROM chips ORDER BY id")
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def chips_of(self, path: str) -> list[int]:
        """The ids of the chips of the indexed image ``path``, ascending."""
        return [row[0] for row in self._query("SELECT chips.id FROM chips JOIN files ON files.id = chips.file_id "
                                              "WHERE files.path = ? ORDER BY chips.id", (path,))]

    def bounds(self) -> np.ndarray:
        """``[N, 4]`` (left, bottom, right, top) of every chip, ordered by id as :meth:`embeddings`; NaN where a chip
        has none."""
        rows = self._query("SELECT left, bottom, right, top FROM chips ORDER BY id")
        return np.array(rows, dtype=np.float64).reshape(len(rows), 4)

    def vectors(self, chip_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored global embeddings ``[D]`` of those of ``chip_ids`` that exist."""
        chip_ids = _row_ids(chip_ids)
        if not chip_ids:
            return {}
        rows = self._query(f"SELECT id, embedding FROM chips WHERE id IN ({','.join('?' * len(chip_ids))})",
                           list(chip_ids))
        return {row[0]: np.frombuffer(row[1], dtype=np.float32) for row in rows}

    def scene_size(self, path: str) -> tuple[int, int] | None:
        """``(width, height)`` in pixels of an indexed image, None if it is not indexed."""
        rows = self._query("SELECT width, height FROM files WHERE path = ?", (path,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def tokens(self, chip_ids: Sequence[int], dim: int) -> np.ndarray | None:
        """Local tokens ``[N, P, D]`` (float32) of ``chip_ids`` in that order; None if the index has none."""
        if not chip_ids:
            return None
        blobs = dict(self._query(f"SELECT id, tokens FROM chips WHERE id IN ({','.join('?' * len(chip_ids))})",
                                 list(chip_ids)))
        if any(blobs.get(i) is None for i in chip_ids):
            return None
        return np.stack([np.frombuffer(blobs[i], dtype=np.float16).reshape(-1, dim) for i in chip_ids]).astype(
            np.float32)

    def chips(self, chip_ids: Sequence[int]) -> dict[int, ChipRecord]:
        """The chips of ``chip_ids`` that exist."""
        chip_ids = _row_ids(chip_ids)
        if not chip_ids:
            return {}
        rows = self._query(
            "SELECT chips.id, files.path, x, y, chips.width, chips.height, left, bottom, right, top, files.crs, "
            f"files.size, files.mtime_ns, files.width, files.height, {self._acquired} "
            f"FROM chips JOIN files ON files.id = chips.file_id WHERE chips.id IN ({','.join('?' * len(chip_ids))})",
            list(chip_ids))
        return {row[0]: ChipRecord(row[0], row[1], Window(*row[2:6]), None if row[6] is None else tuple(row[6:10]),
                                   row[10], (row[11], row[12]), (row[13], row[14]), row[15]) for row in rows}

    def places(self, after: str | None = None, before: str | None = None, placed: bool = False
               ) -> list[tuple[int, str | None, float | None, float | None, float | None, float | None]]:
        """``(id, crs, left, bottom, right, top)`` of the chips acquired at or after ``after`` and before ``before``
        (:func:`rsitr.index.archive.acquisition_time`'s form, which sorts as text; a bound given leaves out chips of
        no known time), only those with bounds and a CRS if ``placed``; ordered by id."""
        conditions, params = [], []
        for bound, operator in ((after, ">="), (before, "<")):
            if bound is not None:
                conditions.append(f"{self._acquired} {operator} ?")
                params.append(bound)
        if placed:
            conditions.append("left IS NOT NULL AND files.crs IS NOT NULL")
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        return self._query(f"SELECT chips.id, files.crs, left, bottom, right, top FROM chips JOIN files ON files.id "
                           f"= chips.file_id {where}ORDER BY chips.id", params)
