"""The one "is this a regular file" check of every input path: an image given to search with, a scene of the
archive, a config, a caption file, a manifest, a checkpoint (to load, or to hash against an index's record), a
pHash cache.

Opening a FIFO blocks until a writer comes (``rsitr search --image q.jpg`` hung for minutes on one), a character
device streams forever (``/dev/zero``), a socket cannot be read: what is read as a file must be a regular file
(a symlink to one is one). The check is a ``stat``, which never blocks.

:func:`cache_folder` is the one root of what rsitr derives and keeps between runs (feature caches, ONNX exports).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rsitr.errors import UserError


class NotARegularFileError(UserError):
    """A path that names a FIFO, socket, device or folder where a file is read."""


def regular_file(path: str | os.PathLike, what: str = "") -> os.stat_result:
    """``path``'s ``stat`` (symlinks followed) when it is a regular file; :class:`NotARegularFileError` naming
    ``what`` it is given as (and what it is) when not. A missing path raises ``FileNotFoundError`` as ``stat`` does."""
    found = os.stat(path)
    if not stat.S_ISREG(found.st_mode):
        kind = ("a folder" if stat.S_ISDIR(found.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(found.st_mode)
                else "a socket" if stat.S_ISSOCK(found.st_mode) else "a device" if stat.S_ISCHR(found.st_mode)
                or stat.S_ISBLK(found.st_mode) else "no regular file")
        raise NotARegularFileError(f"{what + ' ' if what else ''}{Path(path)} is {kind}, not a regular file")
    return found


def cache_folder(kind: str) -> Path:
    """``$RSITR_CACHE_DIR/<kind>``, default ``~/.cache/rsitr/<kind>``: where rsitr keeps what it derives once and
    reuses (``image-features``, ``text-features``, ``onnx``); every file there can be computed again."""
    return Path(os.environ.get("RSITR_CACHE_DIR") or Path.home() / ".cache" / "rsitr") / kind
