"""Caption corpora: loading (Karpathy JSON, NWPU JSON, CSV), PyTorch datasets, pHash merge, generated data."""

from rsitr.data.dataset import (ImageDataset, ImageFileDataset, PairDataset, collate, collate_readable, open_rgb,
                                verify_images)
from rsitr.data.errors import DataError
from rsitr.data.loaders import LAYOUTS, load_corpus, scene_from_filename
from rsitr.data.merge import DroppedImage, MergeReport, merge_corpora
from rsitr.data.records import SPLITS, CaptionCorpus, ImageRecord, random_splits
from rsitr.data.synthetic import make_synthetic_dataset

__all__ = [
    "LAYOUTS", "SPLITS", "CaptionCorpus", "DataError", "DroppedImage", "ImageDataset", "ImageFileDataset", "ImageRecord",
    "MergeReport", "PairDataset", "collate", "collate_readable", "load_corpus", "make_synthetic_dataset",
    "merge_corpora", "open_rgb", "random_splits", "scene_from_filename", "verify_images",
]
