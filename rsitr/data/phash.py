"""Perceptual hashes (pHash, imagehash) of images, a file cache for them, and near-duplicate search.

The one hashing implementation of rsitr: the pHash merge (:mod:`rsitr.data.merge`) and ``rsitr data
inspect`` (:mod:`rsitr.data.inspect`) both use it. A hash is packed into rows of uint64 words, so the
Hamming distance of two images is an XOR and a bit count, and all pairs of 13k images are compared in
numpy blocks in about a second.

Hashing costs about a millisecond per image; :class:`HashCache` keeps hashes in a JSON file keyed by
path, size and modification time, so an image is hashed once until it changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import imagehash
import numpy as np
from tqdm import tqdm

from rsitr.atomic import write_atomic
from rsitr.data.dataset import open_rgb
from rsitr.data.errors import DataError
from rsitr.paths import regular_file

CACHE_VERSION = 1
_PAIR_BLOCK_BYTES = 1 << 26  # memory of one block of XORed words in near_pairs (64 MiB)


class HashCache:
    """pHashes by (resolved path, size, mtime, hash size) in one JSON file; a changed file is hashed again.

    A missing or unreadable cache file starts empty (it is only a cache); :meth:`save` writes atomically.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path.exists():
            regular_file(self.path, "pHash cache")  # a FIFO would block the read: one error line, not a wait
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == CACHE_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass

    @staticmethod
    def _key(path: Path, hash_size: int) -> tuple[str, list]:
        stat = path.stat()
        return f"{hash_size}:{path.resolve()}", [stat.st_size, stat.st_mtime_ns]

    def get(self, path: Path, hash_size: int) -> str | None:
        key, stamp = self._key(path, hash_size)
        entry = self.entries.get(key)
        return entry[2] if entry is not None and entry[:2] == stamp else None

    def put(self, path: Path, hash_size: int, hex_hash: str) -> None:
        key, stamp = self._key(path, hash_size)
        self.entries[key] = [*stamp, hex_hash]
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": CACHE_VERSION, "entries": self.entries})
        write_atomic(self.path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
        self.changed = False


@dataclass
class ImageHashes:
    """``words [N, W]`` uint64 pHash rows of N images; ``unreadable`` maps the index of each image that could
    not be read (its row is all zeros, so leave it out of comparisons) to its :class:`DataError`."""

    words: np.ndarray
    unreadable: dict[int, DataError] = field(default_factory=dict)

    def checked(self) -> np.ndarray:
        """``words``, or the first unreadable image's :class:`DataError`."""
        if self.unreadable:
            raise next(iter(self.unreadable.values()))
        return self.words


def hash_images(paths: Sequence[Path], hash_size: int = 8, cache: HashCache | None = None,
                progress: bool = True) -> ImageHashes:
    """pHashes of ``paths`` (each file decoded once, even when listed twice), through ``cache`` if given."""
    n_words = -(-hash_size * hash_size // 64)
    rows = np.zeros((len(paths), n_words * 8), dtype=np.uint8)
    unreadable: dict[int, DataError] = {}
    done: dict[Path, int] = {}
    for index, path in enumerate(tqdm(paths, desc="pHash", unit="img", disable=not progress)):
        path = Path(path)
        if path in done:
            rows[index] = rows[done[path]]
            if done[path] in unreadable:
                unreadable[index] = unreadable[done[path]]
            continue
        done[path] = index
        try:
            hex_hash = cache.get(path, hash_size) if cache is not None else None
            if hex_hash is None:
                hex_hash = str(imagehash.phash(open_rgb(path), hash_size=hash_size))
                if cache is not None:
                    cache.put(path, hash_size, hex_hash)
        except DataError as err:
            unreadable[index] = err
            continue
        except OSError as err:  # stat of a missing file
            unreadable[index] = DataError(f"cannot read image ({err.strerror})", path=path)
            continue
        bits = np.packbits(imagehash.hex_to_hash(hex_hash).hash.flatten())
        rows[index, :bits.size] = bits
    if cache is not None:
        cache.save()
    return ImageHashes(rows.view(np.uint64), unreadable)


def hamming(words_a: np.ndarray, words_b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` Hamming distances between two sets of packed hashes ``[N, W]``."""
    return np.bitwise_count(words_a[:, None, :] ^ words_b[None, :, :]).sum(axis=-1, dtype=np.int32)


def near_pairs(words_a: np.ndarray, words_b: np.ndarray | None = None,
               max_distance: int = 2) -> list[tuple[int, int, int]]:
    """All ``(i, j, distance)`` with ``hamming(a[i], b[j]) <= max_distance``, sorted.

    Without ``words_b``, pairs within ``words_a`` with ``i < j``. Compared in row blocks of numpy XOR +
    bit count: no Python loop over pairs.
    """
    same = words_b is None
    words_b = words_a if same else words_b
    block = max(1, _PAIR_BLOCK_BYTES // max(1, words_b.nbytes))
    pairs = []
    for start in range(0, len(words_a), block):
        distances = hamming(words_a[start:start + block], words_b)
        rows, columns = np.nonzero(distances <= max_distance)
        rows = rows + start
        keep = rows < columns if same else slice(None)
        pairs += zip(rows[keep].tolist(), columns[keep].tolist(), distances[rows[keep] - start, columns[keep]].tolist())
    return sorted(pairs)


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/rsitr/phash.json`` (``~/.cache/rsitr/phash.json``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rsitr" / "phash.json"
