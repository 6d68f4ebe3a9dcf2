"""The index's stage of the encode pipeline (clip-retrieval's reader -> mapper -> writer): a reader yields
:class:`FileStart`, :class:`Chip` and :class:`FileEnd` events (the indexer's readers: tiled chips read from image
files, or chips encoded elsewhere); the mapper, an :class:`~rsitr.inference.encoder.Encoder`, encodes them
``batch_size`` at a time (no more chip images are held); a :class:`ChipWriter` stores each batch with the files it
completes (the index database, a chip shard, a list). A file whose reading fails drops its pending chips and is
handed to the writer as a failure. The shards and distributors are :mod:`rsitr.inference`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Union

import numpy as np
from PIL import Image

from rsitr.index.archive import Bounds
from rsitr.index.tiling import Window
from rsitr.inference.encoder import Encoder


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
