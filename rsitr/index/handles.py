"""Chip handles: how a user names an indexed chip (``--like``, ``--positive``, ``--negative``; the API's ``like``,
``positive``, ``negative``): its id, or the indexed image's path (relative to the archive; on the command line also
a path on disk inside it), with ``:WxH+X+Y`` naming one chip of a tiled scene (the window search results print).

Resolved against the index database alone (no torch, no model), so a wrong handle is refused before a model loads;
:func:`list_chips` shows the handles of the files a pattern matches.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rsitr.errors import UserError
from rsitr.index.store import MetadataStore
from rsitr.index.tiling import Window

Handle = int | str
"""A chip id, or ``PATH`` / ``PATH:WxH+X+Y`` of an indexed image."""
_WINDOW = re.compile(r"(\d+)x(\d+)\+(\d+)\+(\d+)")


class UnknownChipError(UserError, LookupError):
    """A chip id or path (to search like, or marked in feedback) that the index does not hold."""


def window_text(window: Window) -> str:
    """``WxH+X+Y``, as search results print a chip's window and a handle names it."""
    return f"{window.width}x{window.height}+{window.x}+{window.y}"


@dataclass(frozen=True)
class ListedChip:
    chip_id: int
    path: str
    window: Window

    @property
    def handle(self) -> str:
        return f"{self.path}:{window_text(self.window)}"


def _split(handle: str) -> tuple[str, Window | None]:
    path, _, window = handle.rpartition(":")
    match = _WINDOW.fullmatch(window) if path else None
    return (path, Window(*(int(match[i]) for i in (3, 4, 1, 2)))) if match else (handle, None)


def _indexed_path(store: MetadataStore, root: Path, path: str, on_disk: bool) -> str | None:
    """``path`` as the index records it: itself when indexed, else (``on_disk``) a file on disk inside ``root``."""
    if store.file(path) is not None:
        return path
    if not on_disk or not Path(path).is_file():
        return None
    try:
        relative = Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    return relative if store.file(relative) is not None else None


def resolve_chip(store: MetadataStore, handle: Handle, *, on_disk: bool = False) -> int:
    """The chip id ``handle`` names, or :class:`UnknownChipError` saying why none. ``on_disk`` also accepts a path
    on disk inside the archive (the command line's; never the web service's, whose paths are the archive's)."""
    text = str(handle).strip()
    if isinstance(handle, int) or text.isdigit():
        if store.chips([int(text)]):
            return int(text)
        raise UnknownChipError(f"no chip {text} in this index; chips are named by the ids and paths search results "
                               f"print (or `rsitr search INDEX --list 'PATTERN'`)")
    name, window = _split(text)
    path = _indexed_path(store, Path(store.get_meta("root")), name, on_disk)
    if path is None:
        raise UnknownChipError(f"{name} is no indexed image of this index (paths are relative to its images folder; "
                               f"`rsitr search INDEX --list 'PATTERN'` lists them)")
    records = store.chips(store.chips_of(path)).values()
    chosen = [record for record in records if window is None or record.window == window]
    if len(chosen) == 1:
        return chosen[0].id
    if not chosen:
        raise UnknownChipError(f"{path} has no chip at {window_text(window)}; its chips: "
                               f"{', '.join(window_text(r.window) for r in list(records)[:5])}"
                               f"{' ...' if len(records) > 5 else ''}")
    raise UnknownChipError(f"{path} is cut into {len(chosen)} chips: name one as {path}:WxH+X+Y (e.g. "
                           f"{path}:{window_text(chosen[0].window)}) or by its id")


def resolve_chips(store: MetadataStore, handles: Sequence[Handle], *, on_disk: bool = False) -> list[int]:
    """:func:`resolve_chip` of each handle, in order."""
    return [resolve_chip(store, handle, on_disk=on_disk) for handle in handles]


def list_chips(store: MetadataStore, pattern: str) -> list[ListedChip]:
    """The chips of the indexed images whose path (relative to the archive) matches the glob ``pattern``, by path
    then id."""
    paths = sorted(path for path, record in store.files().items() if record.complete and
                   fnmatch.fnmatchcase(path, pattern))
    listed = []
    for path in paths:
        records = store.chips(store.chips_of(path))
        listed += [ListedChip(chip_id, path, records[chip_id].window) for chip_id in sorted(records)]
    return listed
