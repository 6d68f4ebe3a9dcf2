"""What is in a set of caption files, before training on them: ``rsitr data inspect``.

Per dataset and split: images, captions, captions per image, empty and duplicate captions, missing and
unreadable images, scene classes. Then near-duplicate images (pHash Hamming distance <= ``max_distance``)
within each split, across splits and across datasets, and a verdict on train/test leakage: a train or val
image near a test image, which :func:`rsitr.data.merge.merge_corpora` removes from training.

Files are read as they are (``load_corpus(check=False)``): a problem is counted, not raised.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from rsitr.data.loaders import load_corpus
from rsitr.data.phash import HashCache, hash_images, near_pairs
from rsitr.data.records import SPLITS, CaptionCorpus

KINDS = ("within split", "across splits", "across datasets")


@dataclass
class SplitStats:
    images: int = 0
    captions: int = 0  # non-empty captions (what training and evaluation use)
    min_captions: int = 0  # fewest non-empty captions of an image
    max_captions: int = 0
    empty_captions: int = 0
    duplicate_captions: int = 0  # same text (case and spacing aside) as an earlier caption of the same image
    missing_images: int = 0
    unreadable_images: int = 0
    scenes: dict[str, int] = field(default_factory=dict)  # images per scene class; unknown scenes not counted

    @property
    def captions_per_image(self) -> float:
        return self.captions / self.images if self.images else 0.0


@dataclass
class DatasetStats:
    name: str
    file: str
    images_root: str
    splits: dict[str, SplitStats]


@dataclass(frozen=True)
class ImageRef:
    dataset: str
    split: str
    path: str


@dataclass(frozen=True)
class NearPair:
    a: ImageRef
    b: ImageRef
    distance: int
    kind: str  # one of KINDS


@dataclass
class InspectReport:
    max_distance: int
    datasets: list[DatasetStats]
    pairs: list[NearPair]
    leaked: list[ImageRef]  # train / val images within max_distance of a test image, in file order

    def count(self, kind: str) -> int:
        return sum(pair.kind == kind for pair in self.pairs)

    @property
    def verdict(self) -> str:
        if not self.leaked:
            return (f"verdict: no train/test leakage (no train or val image is within pHash distance "
                    f"{self.max_distance} of a test image)")
        per_dataset = ", ".join(f"{name} {n}" for name, n in Counter(ref.dataset for ref in self.leaked).items())
        return (f"verdict: LEAKAGE: {len(self.leaked)} train/val images ({per_dataset}) are within pHash distance "
                f"{self.max_distance} of a test image; a model trained on them has seen those test images. "
                f"`rsitr train` with several datasets removes them (leakage-aware merge)")

    def to_json(self) -> dict:
        return {"max_distance": self.max_distance, "datasets": [asdict(d) for d in self.datasets],
                "near_duplicates": {kind: [asdict(p) for p in self.pairs if p.kind == kind] for kind in KINDS},
                "leaked_train_images": [asdict(ref) for ref in self.leaked], "verdict": self.verdict}

    def summary(self, limit: int = 10) -> str:
        """Readable report: a table per dataset, up to ``limit`` listed pairs of each kind, the verdict."""
        lines = []
        header = (f"  {'split':<6}{'images':>8}{'captions':>10}{'per image':>13}{'empty':>7}{'duplicate':>11}"
                  f"{'missing':>9}{'unreadable':>12}{'scenes':>8}")
        for dataset in self.datasets:
            lines += [f"{dataset.name}: {dataset.file} (images in {dataset.images_root})", header]
            for split, s in dataset.splits.items():
                per_image = f"{s.captions_per_image:.2f}" + (f" ({s.min_captions}-{s.max_captions})"
                                                             if s.min_captions != s.max_captions else "")
                lines.append(f"  {split:<6}{s.images:>8,}{s.captions:>10,}{per_image:>13}{s.empty_captions:>7}"
                             f"{s.duplicate_captions:>11}{s.missing_images:>9}{s.unreadable_images:>12}"
                             f"{len(s.scenes):>8}")
        lines.append(f"near-duplicate images (pHash Hamming distance <= {self.max_distance}):")
        for kind in KINDS:
            pairs = [pair for pair in self.pairs if pair.kind == kind]
            lines.append(f"  {kind}: {len(pairs)} pairs")
            lines += [f"    {_ref(p.a)} ~ {_ref(p.b)} (distance {p.distance})" for p in pairs[:limit]]
            if len(pairs) > limit:
                lines.append(f"    ... and {len(pairs) - limit} more (all of them in --out)")
        lines.append(f"train/val images near a test image: {len(self.leaked)}")
        lines += [f"    {_ref(ref)}" for ref in self.leaked[:limit]]
        if len(self.leaked) > limit:
            lines.append(f"    ... and {len(self.leaked) - limit} more (all of them in --out)")
        lines.append(self.verdict)
        return "\n".join(lines)


def _ref(ref: ImageRef) -> str:
    return f"{ref.dataset}/{ref.split} {Path(ref.path).name}"


def inspect_datasets(files: Sequence[tuple[str | Path, str | Path]], max_distance: int = 2, hash_size: int = 8,
                     cache: HashCache | None = None, progress: bool = True) -> InspectReport:
    """Inspect caption files given as ``(caption file, image folder)`` pairs; see the module docstring."""
    corpora = _load_all(files)
    records = [(corpus.name, record) for corpus in corpora for record in corpus.images]
    hashes = hash_images([record.path for _, record in records], hash_size, cache, progress)
    missing = {index for index, (_, record) in enumerate(records) if not record.path.is_file()}
    unreadable = set(hashes.unreadable) - missing
    datasets = [DatasetStats(corpus.name, str(path), str(root), {}) for corpus, (path, root) in zip(corpora, files)]
    by_name = {d.name: d for d in datasets}
    for index, (name, record) in enumerate(records):
        stats = by_name[name].splits.setdefault(record.split, SplitStats())
        _count(stats, record.captions, index in missing, index in unreadable, record.scene)
    for dataset in datasets:
        dataset.splits = {split: dataset.splits[split] for split in SPLITS if split in dataset.splits}
    valid = [index for index in range(len(records)) if index not in hashes.unreadable]
    refs = [ImageRef(name, record.split, str(record.path)) for name, record in records]
    pairs, leaked = [], set()
    for i, j, distance in near_pairs(hashes.words[valid], max_distance=max_distance):
        a, b = refs[valid[i]], refs[valid[j]]
        kind = KINDS[2] if a.dataset != b.dataset else KINDS[0] if a.split == b.split else KINDS[1]
        pairs.append(NearPair(a, b, distance, kind))
        if (a.split == "test") != (b.split == "test"):
            leaked.add(valid[j] if a.split == "test" else valid[i])
    return InspectReport(max_distance, datasets, pairs, [refs[index] for index in sorted(leaked)])


def _load_all(files: Sequence[tuple[str | Path, str | Path]]) -> list[CaptionCorpus]:
    """Each file read as it is, named by its stem (``rsicd``, ``ucm``; ``rsicd-2`` when a name repeats)."""
    corpora: list[CaptionCorpus] = []
    for path, root in files:
        corpus = load_corpus(path, root, check=False)
        names = {c.name for c in corpora}
        if corpus.name in names:
            name = next(f"{corpus.name}-{n}" for n in range(2, len(files) + 2) if f"{corpus.name}-{n}" not in names)
            corpus = CaptionCorpus(name, [replace(record, source=name) for record in corpus.images])
        corpora.append(corpus)
    return corpora


def _count(stats: SplitStats, captions: Sequence[str], missing: bool, unreadable: bool, scene: str | None) -> None:
    texts = [caption for caption in captions if caption]
    normalised = [re.sub(r"\s+", " ", text).lower() for text in texts]
    stats.min_captions = min(stats.min_captions, len(texts)) if stats.images else len(texts)
    stats.max_captions = max(stats.max_captions, len(texts))
    stats.images += 1
    stats.captions += len(texts)
    stats.empty_captions += len(captions) - len(texts)
    stats.duplicate_captions += len(normalised) - len(set(normalised))
    stats.missing_images += missing
    stats.unreadable_images += unreadable
    if scene:
        stats.scenes[scene] = stats.scenes.get(scene, 0) + 1
