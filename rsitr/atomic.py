"""Crash-safe file writes: a reader or a killed writer never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (process-wide, but only for an instant).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)`` on a uniquely named file beside ``path``, then ``os.replace`` it into place.

    The file ends with the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not the
    owner-only mode of the temporary file, so that e.g. an index built by one account can be served by another.
    The temporary file is removed when ``write`` fails, so nothing is left behind.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
