"""The search product: index an image archive (tiled into chips) and search it by text or by image.

The names below are imported on first use (PEP 562), so that a light module of the package (the store's file
names, the not-an-index message) can be read by the command line without importing torch, FAISS or the model.
"""

from __future__ import annotations

from rsitr._lazy import lazy_exports

_HOMES = {
    "rsitr.index.archive": ("PathOutsideArchiveError", "resolve_in_root"),
    "rsitr.index.archive_index": ("ArchiveIndex", "SourceChangedError"),
    "rsitr.index.compatibility": ("IndexCompatibilityError",),
    "rsitr.index.find_all": ("DEFAULT_THRESHOLD", "Found"),
    "rsitr.index.handles": ("UnknownChipError", "list_chips", "resolve_chips"),
    "rsitr.index.heatmap": ("NotGeoreferencedError", "SceneScores"),
    "rsitr.index.indexer": ("BuildOptions", "IndexSettings", "IndexSetupError", "UpdateReport"),
    "rsitr.index.searcher": ("SearchHit", "SearchResults"),
    "rsitr.index.tiling": ("Window", "chip_windows"),
}
__all__, __getattr__ = lazy_exports(__name__, _HOMES)
