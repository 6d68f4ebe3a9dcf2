"""The search product: index an image archive (tiled into chips) and search it by text or by image.

The names below are imported on first use (PEP 562), so that a light module of the package (the store's file
names, the not-an-index message) can be read by the command line without importing torch, FAISS or the model.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "rsitr.index.archive": ("PathOutsideArchiveError", "resolve_in_root"),
    "rsitr.index.archive_index": ("ArchiveIndex", "SourceChangedError"),
    "rsitr.index.compatibility": ("IndexCompatibilityError",),
    "rsitr.index.find_all": ("DEFAULT_THRESHOLD", "Found"),
    "rsitr.index.handles": ("UnknownChipError", "list_chips", "resolve_chips"),
    "rsitr.index.heatmap": ("NotGeoreferencedError", "SceneScores"),
    "rsitr.index.indexer": ("IndexSettings", "IndexSetupError", "UpdateReport"),
    "rsitr.index.searcher": ("SearchHit", "SearchResults"),
    "rsitr.index.tiling": ("Window", "chip_windows"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
