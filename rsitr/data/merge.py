"""Merging caption corpora without test leakage or near-duplicate images, found by perceptual hash (pHash).

RSICD, RSITMD and NWPU-Captions share source imagery (RSITMD re-captions many RSICD images), so a naive
union leaks test images into training. Test images are all kept; a train or val image whose pHash lies
within ``max_distance`` bits of any test image is removed, and then a training image within
``max_distance`` of one already kept (corpora and images taken in order) is dropped with its captions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from rsitr.data.phash import HashCache, hash_images, near_pairs
from rsitr.data.records import CaptionCorpus, ImageRecord


@dataclass(frozen=True)
class DroppedImage:
    path: Path
    source: str
    duplicate_of: Path
    distance: int
    split: str = ""


@dataclass
class MergeReport:
    """What :func:`merge_corpora` removed, and images kept / removed per source corpus.

    ``leaked``: train and val images near a test image (removed first); ``dropped``: near-duplicates among
    the remaining training images.
    """

    max_distance: int
    dropped: list[DroppedImage] = field(default_factory=list)
    leaked: list[DroppedImage] = field(default_factory=list)
    kept_per_source: dict[str, int] = field(default_factory=dict)
    dropped_per_source: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        kept, leaked, dropped = sum(self.kept_per_source.values()), len(self.leaked), len(self.dropped)
        lines = [f"kept {kept} of {kept + leaked + dropped} images; removed {leaked} train/val images near a test "
                 f"image (leakage) and {dropped} near-duplicates (pHash Hamming distance <= {self.max_distance})"]
        lines += [f"  {source}: kept {n}, removed {self.dropped_per_source[source]}"
                  for source, n in self.kept_per_source.items()]
        for name, removed in (("leaked", self.leaked), ("dropped", self.dropped)):
            lines += [f"  {name} {d.source}/{d.split} {d.path} (distance {d.distance} to {d.duplicate_of})"
                      for d in removed[:5]]
            if len(removed) > 5:
                lines.append(f"  ... and {len(removed) - 5} more {name}")
        return "\n".join(lines)


def merge_corpora(corpora: Sequence[CaptionCorpus], max_distance: int = 2, hash_size: int = 8,
                  progress: bool = True, cache: HashCache | None = None) -> tuple[CaptionCorpus, MergeReport]:
    """Union of ``corpora`` without test leakage or near-duplicate training images.

    1. Test images are never dropped. 2. A train or val image within ``max_distance`` pHash bits of any test
    image (of any corpus) is removed and listed in ``report.leaked``. 3. The remaining training images are
    taken in order (corpora, then images), each dropped when within ``max_distance`` of one already kept.
    Records keep their ``source`` and split.
    """
    records: list[ImageRecord] = [record for corpus in corpora for record in corpus.images]
    hashes = hash_images([record.path for record in records], hash_size, cache, progress).checked()
    report = MergeReport(max_distance)
    test = [index for index, record in enumerate(records) if record.split == "test"]
    training = [index for index, record in enumerate(records) if record.split != "test"]
    nearest_test: dict[int, tuple[int, int]] = {}  # training index -> (test index, distance) of its nearest test image
    if test and training:
        for row, column, distance in near_pairs(hashes[training], hashes[test], max_distance):
            if training[row] not in nearest_test or distance < nearest_test[training[row]][1]:
                nearest_test[training[row]] = (test[column], distance)
    report.leaked = [DroppedImage(records[i].path, records[i].source, records[t].path, d, records[i].split)
                     for i, (t, d) in sorted(nearest_test.items())]
    kept_hashes = np.empty_like(hashes)
    kept_training: list[int] = []
    for index in tqdm([i for i in training if i not in nearest_test], desc="dedup", unit="img", disable=not progress):
        record = records[index]
        if kept_training:
            distances = np.bitwise_count(kept_hashes[:len(kept_training)] ^ hashes[index]).sum(axis=1, dtype=np.int32)
            nearest = int(distances.argmin())
            if distances[nearest] <= max_distance:
                report.dropped.append(DroppedImage(record.path, record.source, records[kept_training[nearest]].path,
                                                   int(distances[nearest]), record.split))
                continue
        kept_hashes[len(kept_training)] = hashes[index]
        kept_training.append(index)
    kept_indices = set(test) | set(kept_training)
    kept = [record for index, record in enumerate(records) if index in kept_indices]
    kept_counts = Counter(r.source for r in kept)
    removed_counts = Counter(d.source for d in report.dropped + report.leaked)
    sources = dict.fromkeys(record.source for record in records)
    report.kept_per_source = {source: kept_counts[source] for source in sources}
    report.dropped_per_source = {source: removed_counts[source] for source in sources}
    return CaptionCorpus("+".join(corpus.name for corpus in corpora), kept), report
