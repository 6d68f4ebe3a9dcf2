"""The one error type of the data package."""

from __future__ import annotations

from pathlib import Path

from rsitr.errors import UserError


class DataError(UserError):
    """A caption file or image that cannot be used.

    The message names the file, the entry (index and file name) and the fix. ``path``, ``entry`` and ``fix``
    are kept as attributes for callers that report problems in bulk (see ``verify_images``).
    A bare ``DataError(message)`` stays valid so that PyTorch's DataLoader can re-raise it from a worker.
    """

    def __init__(self, problem: str, *, path: str | Path | None = None, entry: str | None = None,
                 fix: str | None = None, parameters: tuple[str, ...] = ()) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.entry = entry
        self.fix = fix
        where = ", ".join(part for part in (str(path) if path is not None else None, entry) if part)
        message = f"{where}: {problem}" if where else problem
        super().__init__(f"{message}. Fix: {fix}" if fix else message, parameters=parameters)
