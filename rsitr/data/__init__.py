"""Caption corpora: loading (Karpathy JSON, NWPU JSON, CSV), PyTorch datasets, pHash merge, generated data.

The names below are imported on first use (PEP 562), so that reading a caption file or a class folder (what a
command checks before its model loads) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "rsitr.data.dataset": ("ImageDataset", "ImageFileDataset", "PairDataset", "collate", "collate_readable", "open_rgb",
                           "verify_images"),
    "rsitr.data.errors": ("DataError",),
    "rsitr.data.loaders": ("LAYOUTS", "load_corpus", "scene_from_filename"),
    "rsitr.data.merge": ("DroppedImage", "MergeReport", "merge_corpora"),
    "rsitr.data.records": ("SPLITS", "CaptionCorpus", "ImageRecord", "random_splits"),
    "rsitr.data.synthetic": ("make_synthetic_dataset",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
