"""Query images kept on the server for a while, so that a search by image has an id a link can carry.

An uploaded query image is encoded once; its embedding (what the search needs) and a small JPEG (what
the page shows) are kept under an id derived from the upload's bytes, so the same image gets the same
id. A search names the id instead of sending the image again: reloading, sharing a link, refining and
exporting all work while the image is kept. The store is bounded in both count (the least recently used
image goes first) and age (an image is forgotten ``max_age_s`` after it was last uploaded), so its
memory stays small whatever the clients do; a forgotten or unknown id is a
:class:`UnknownQueryImageError` that says so.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock

import numpy as np

from rsitr.errors import UserError

DEFAULT_CAPACITY = 256
DEFAULT_MAX_AGE_S = 24 * 3600
ID_PATTERN = r"^[0-9a-f]{16}$"


class UnknownQueryImageError(UserError, LookupError):
    """A query image id the server does not hold (never uploaded, or forgotten since)."""


@dataclass(frozen=True)
class QueryImage:
    embedding: np.ndarray
    """The image's unit embedding ``[D]``, what :meth:`rsitr.index.ArchiveIndex.search` takes as ``image``."""
    jpeg: bytes
    """A small JPEG of the image, to show it."""
    added: float


def query_image_id(data: bytes) -> str:
    """The id of an upload: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} hours" if seconds >= 3600 else f"{seconds / 60:g} minutes" if seconds >= 60 \
        else f"{seconds:g} seconds"


class QueryImages:
    """A thread-safe store of at most ``capacity`` query images, each kept ``max_age_s`` seconds."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or max_age_s <= 0:
            raise ValueError(f"a query image store needs capacity >= 1 and max_age_s > 0, got {capacity}, {max_age_s}")
        self.capacity, self.max_age_s = capacity, max_age_s
        self._clock = clock
        self._items: OrderedDict[str, QueryImage] = OrderedDict()
        self._lock = Lock()

    def add(self, data: bytes, embedding: np.ndarray, jpeg: bytes) -> str:
        """Keep the embedding and JPEG of the uploaded bytes ``data``; returns its id."""
        image_id = query_image_id(data)
        with self._lock:
            self._items.pop(image_id, None)
            self._items[image_id] = QueryImage(np.asarray(embedding, np.float32), jpeg, self._clock())
            self._forget()
        return image_id

    def get(self, image_id: str) -> QueryImage:
        """The kept image ``image_id``; :class:`UnknownQueryImageError` when there is none (any longer)."""
        with self._lock:
            self._forget()
            item = self._items.get(image_id)
            if item is not None:
                self._items.move_to_end(image_id)
        if item is None:
            raise UnknownQueryImageError(
                f"no query image {image_id} on this server: query images are kept for {_duration(self.max_age_s)}, "
                f"the last {self.capacity} of them, until the server restarts; search by the image again")
        return item

    def __len__(self) -> int:
        with self._lock:
            self._forget()
            return len(self._items)

    def _forget(self) -> None:
        oldest = self._clock() - self.max_age_s
        for image_id in [key for key, item in self._items.items() if item.added <= oldest]:
            del self._items[image_id]
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
