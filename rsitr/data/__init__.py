"""Caption corpora: loading (Karpathy JSON, NWPU JSON, CSV), PyTorch datasets, pHash merge, generated data.

The names below are imported on first use (PEP 562), so that reading a caption file or a class folder (what a
command checks before its model loads) imports no torch.
"""

from __future__ import annotations

from rsitr._lazy import lazy_exports

_HOMES = {
    "rsitr.data.dataset": ("ImageDataset", "ImageFileDataset", "PairDataset", "collate", "collate_readable", "open_rgb",
                           "verify_images"),
    "rsitr.data.errors": ("DataError",),
    "rsitr.data.loaders": ("LAYOUTS", "load_corpus", "scene_from_filename"),
    "rsitr.data.merge": ("DroppedImage", "MergeReport", "merge_corpora"),
    "rsitr.data.records": ("SPLITS", "CaptionCorpus", "ImageRecord", "random_splits"),
    "rsitr.data.synthetic": ("make_synthetic_dataset",),
}
__all__, __getattr__ = lazy_exports(__name__, _HOMES)
