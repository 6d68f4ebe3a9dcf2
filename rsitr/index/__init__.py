"""The search product: index an image archive (tiled into chips) and search it by text or by image."""

from rsitr.index.archive import PathOutsideArchiveError, resolve_in_root
from rsitr.index.archive_index import ArchiveIndex, SourceChangedError, UnknownChipError
from rsitr.index.compatibility import IndexCompatibilityError
from rsitr.index.find_all import DEFAULT_THRESHOLD, Found
from rsitr.index.heatmap import NotGeoreferencedError, SceneScores
from rsitr.index.indexer import IndexSettings, IndexSetupError, UpdateReport
from rsitr.index.searcher import SearchHit, SearchResults
from rsitr.index.tiling import Window, chip_windows

__all__ = ["ArchiveIndex", "DEFAULT_THRESHOLD", "Found", "NotGeoreferencedError", "SceneScores", "IndexCompatibilityError", "IndexSettings", "IndexSetupError", "PathOutsideArchiveError",
           "SearchHit", "SearchResults", "SourceChangedError", "UnknownChipError", "UpdateReport", "Window",
           "chip_windows", "resolve_in_root"]
