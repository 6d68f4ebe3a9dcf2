"""The encode pipeline, as clip-retrieval's reader -> mapper -> writer with a distributor: the one place where
things are encoded in batches and written, and where a run resumes by shard.

- **Chips** (:func:`encode_chips`): a reader yields :class:`FileStart`, :class:`Chip` and :class:`FileEnd` events
  (the indexer's readers: tiled chips read from image files, or chips encoded elsewhere); the mapper, an
  :class:`~rsitr.index.index_encoder.Encoder`, encodes them ``batch_size`` at a time (no more chip images are held);
  a :class:`ChipWriter` stores each batch with the files it completes (the index database, a chip shard, a list).
  A file whose reading fails drops its pending chips and is handed to the writer as a failure.
- **Shards** (:class:`ShardFolder`): ``part-NNNNN.parquet`` files, each written atomically, and ``_manifest.json``,
  what they were made from. A run that finds the same manifest keeps the shards there and writes only the missing
  ones; another manifest is refused (``rsitr embed``) or starts the folder over (a cache).
- **Distributors** run a worker (one model, built once) over the shards still to write: :func:`in_process` here,
  or a Ray actor pool (:class:`rsitr.ray_embeddings.RayDistributor`) with the same worker, so both engines write
  the same files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence, Union

import numpy as np
from PIL import Image

from rsitr.atomic import write_atomic
from rsitr.documents import expect_mapping, read_json
from rsitr.errors import UserError
from rsitr.index.archive import Bounds
from rsitr.index.index_encoder import Encoder, Fingerprint
from rsitr.index.tiling import Window

MANIFEST = "_manifest.json"  # "_" so that Parquet readers of the folder skip it
SHARD_NAME = "part-{:05d}.parquet"
SKIPPED_KEY = b"rsitr.skipped"
"""A shard's Parquet metadata key: the inputs it holds no row of (unreadable)."""


# -- chips: reader -> encoder -> writer, in batches -----------------------------------------------------------
@dataclass(frozen=True)
class FileStart:
    """A file whose chips follow: its size in pixels, CRS (None: not georeferenced) and acquisition time (None:
    not known)."""

    path: str
    width: int
    height: int
    crs: str | None
    acquired: str | None = None


@dataclass
class Chip:
    """One chip of the file ``file``: its pixels until it is encoded, its vectors after."""

    file: str
    window: Window
    bounds: Bounds | None
    image: Image.Image | None = None
    embedding: np.ndarray | None = None
    """``[D]`` float32, L2-normalised (:meth:`Encoder.encode_images`)."""
    tokens: np.ndarray | None = None
    """``[P, D]`` local tokens, or None when they are not kept."""


@dataclass(frozen=True)
class FileEnd:
    """The end of a file's chips; ``error`` when it could not be read (its chips are dropped)."""

    path: str
    error: str | None = None


ChipEvent = Union[FileStart, Chip, FileEnd]


class ChipWriter(Protocol):
    def start(self, file: FileStart) -> None:
        """A file's chips follow (e.g. register it)."""

    def write(self, chips: list[Chip], completed: list[str]) -> None:
        """Store a batch of encoded chips and mark the files it completes (every chip of theirs is written)."""

    def fail(self, path: str, error: str) -> None:
        """The file ``path`` could not be read: drop what was written of it and record why."""


def encode_chips(events: Iterable[ChipEvent], writer: ChipWriter, batch_size: int, encoder: Encoder | None,
                 keep_tokens: bool = True, orientations: int = 1) -> None:
    """Encode the chips of ``events`` with ``encoder`` (None: they come encoded) ``batch_size`` at a time, each
    averaged over ``orientations``, and hand each batch to ``writer`` with the files completed since the last one;
    the last batch (possibly empty) too, so every completed file is marked."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: list[Chip] = []
    completed: list[str] = []

    def flush() -> None:
        if encoder is not None and pending:
            encoded = encoder.encode_images([chip.image for chip in pending], orientations)
            for chip, embedding, tokens in zip(pending, encoded.embeddings, encoded.tokens):
                chip.image, chip.embedding, chip.tokens = None, embedding, tokens if keep_tokens else None
        writer.write(pending[:], completed[:])
        pending.clear()
        completed.clear()

    for event in events:
        if isinstance(event, Chip):
            pending.append(event)
            if len(pending) >= batch_size:
                flush()
        elif isinstance(event, FileStart):
            writer.start(event)
        elif event.error is None:
            completed.append(event.path)
        else:
            pending[:] = [chip for chip in pending if chip.file != event.path]
            writer.fail(event.path, event.error)
    flush()


# -- shards: resumable, written atomically -------------------------------------------------------------------
class ShardFolder:
    """A folder of Parquet shards and their manifest (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def shard(self, number: int) -> Path:
        return self.path / SHARD_NAME.format(number)

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def strays(self, numbers: Iterable[int]) -> list[Path]:
        """The Parquet files of the folder that are no shard ``numbers`` of this run (a copied ``part-00007``):
        a reader of the whole folder would read their rows too."""
        expected = {self.shard(number).name for number in numbers}
        return sorted(path for path in self.path.glob("*.parquet") if path.name not in expected)

    def resume(self, manifest: dict, compared: Sequence[str], restart: bool = False) -> None:
        """Keep the shards of a run whose manifest has the same ``compared`` keys and a matching model fingerprint;
        otherwise refuse with a :class:`UserError` naming the difference, or with ``restart`` delete them."""
        path = self.path / MANIFEST
        if not path.is_file():
            problem = f"{self.path} holds Parquet shards but no {MANIFEST}; pass an empty or new --out folder" \
                if self.shards() else None
        else:
            try:
                old = expect_mapping(read_json(path, "manifest"), f"manifest {path}")
                same_model = Fingerprint.from_dict(old["fingerprint"]).matches(
                    Fingerprint.from_dict(manifest["fingerprint"]))
            except (ValueError, KeyError, TypeError, AttributeError) as err:  # DocumentError, not a manifest
                old, same_model = None, False
                problem = (f"{path} is no manifest rsitr can read ({type(err).__name__}: {str(err)[:160]}); pass "
                           f"another --out folder, or delete {self.path} to start over")
            if old is not None:
                changed = [key for key in compared if old.get(key) != manifest[key]]
                if not same_model:
                    changed.append("model (fingerprint)")
                problem = (f"{self.path} holds embeddings made with other {', '.join(changed)}; pass another --out "
                           f"folder, or delete it to start over (the same command resumes an interrupted run)"
                           ) if changed else None
        if problem is not None:
            if not restart:
                raise UserError(problem)
            self.clear()

    def write_manifest(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / MANIFEST, lambda temporary: Path(temporary).write_text(json.dumps(manifest, indent=2)))

    def write(self, number: int, table) -> None:
        """Write ``table`` (a pyarrow Table) as shard ``number``, atomically: it is there whole or not at all."""
        import pyarrow.parquet as pq

        write_atomic(self.shard(number), lambda temporary: pq.write_table(table, temporary))

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- distributors ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    """A shard to write: its number and what it holds, as its worker reads it (JSON: a row range, a file list)."""

    number: int
    spec: str


ShardWorker = Callable[[ShardTask], None]
"""Encodes and writes one shard; made once per process (or Ray actor), so it holds the model."""


class Distributor(Protocol):
    workers_device: str | None
    """The device the workers encode on (None: the caller's encoder as it is)."""

    def __call__(self, make_worker: Callable[[], ShardWorker], tasks: Sequence[ShardTask],
                 done: Callable[[ShardTask], None]) -> None:
        """Run a worker made by ``make_worker`` over every task (``done`` after each one written)."""


class InProcess:
    """The distributor that runs one worker here, task after task."""

    workers_device: str | None = None

    def __call__(self, make_worker: Callable[[], ShardWorker], tasks: Sequence[ShardTask],
                 done: Callable[[ShardTask], None]) -> None:
        if tasks:
            worker = make_worker()
            for task in tasks:
                worker(task)
                done(task)


in_process = InProcess()
