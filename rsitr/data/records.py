"""In-memory form of a captioned image collection: one record per image, a corpus of records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its captions. ``source`` names the corpus it was loaded from (kept through merges)."""

    path: Path
    captions: tuple[str, ...]
    split: str
    scene: str | None
    source: str


@dataclass
class CaptionCorpus:
    """A named list of captioned images.

    Captions are numbered in image order ("flat" order): caption ``j`` of ``captions`` belongs to image
    ``caption_image[j]``. That numbering is the caption id used by the datasets and the EBA similarity bank,
    and ``caption_image`` is what ``rsitr.evaluate.recall_metrics`` takes.
    """

    name: str
    images: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.images)

    def split(self, name: str) -> CaptionCorpus:
        """The images of one split (``train``, ``val``/``validation`` or ``test``), as a new corpus."""
        if name not in SPLIT_ALIASES:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        split = SPLIT_ALIASES[name]
        return CaptionCorpus(f"{self.name}/{split}", [image for image in self.images if image.split == split])

    @property
    def captions(self) -> list[str]:
        return [caption for image in self.images for caption in image.captions]

    @property
    def caption_image(self) -> list[int]:
        return [index for index, image in enumerate(self.images) for _ in image.captions]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images and captions per split, e.g. ``{"train": {"images": 48, "captions": 240}, ...}``."""
        counts = {split: {"images": 0, "captions": 0} for split in SPLITS}
        for image in self.images:
            counts[image.split]["images"] += 1
            counts[image.split]["captions"] += len(image.captions)
        return counts

    def summary(self) -> str:
        """One readable line, e.g. ``rsicd: 10921 images, 54605 captions (train 8734 / val 1094 / test 1093
        images); sources: rsicd 10921``."""
        per_split = " / ".join(f"{split} {c['images']}" for split, c in self.counts().items())
        sources = ", ".join(f"{source} {n}" for source, n in Counter(i.source for i in self.images).items())
        return (f"{self.name}: {len(self.images)} images, {len(self.captions)} captions "
                f"({per_split} images); sources: {sources or 'none'}")


def random_splits(n_images: int, seed: int = 0) -> list[str]:
    """A seeded 80/10/10 train/val/test assignment of ``n_images`` images (same seed, same splits)."""
    order = np.random.default_rng(seed).permutation(n_images)
    n_train = round(SPLIT_FRACTIONS[0] * n_images)
    n_val = round(SPLIT_FRACTIONS[1] * n_images)
    splits = [""] * n_images
    for rank, index in enumerate(order):
        splits[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return splits
