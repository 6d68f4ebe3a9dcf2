"""Precision@20 of text search alone versus one and two rounds of relevance feedback, on UC Merced.

Indexes the 2,100 UC Merced images (one chip each) with the product's :class:`rsitr.index.ArchiveIndex`,
then asks one held-out caption per test-split image (the first of its five UCM-Captions sentences; the
model never trained on test captions). A hit is relevant when its image has the query image's scene
(21 classes of 100 images, from ``captions_ucm.csv``). Feedback is what an analyst does on the first
page: every hit of the 20 shown is marked wanted (same scene) or not wanted, and the search is asked
again with those marks (Rocchio, :mod:`rsitr.index.feedback`); round two adds the marks of the refined
page. As on the page, chips marked not wanted are left out of the refined results, and wanted ones may
appear again and count as found. Beside it, in the same run, the same marking with the rejected chips kept
in the results (``remove_unwanted=False``: only Rocchio's query vector moves), to show what each part adds.
Chance level is 100 / 2100 = 0.048.

    python benchmarks/feedback.py [--data ../shared/data/ucm] [--model NAME] [--pretrained TAG_OR_CKPT]

Without ``--model`` and ``--pretrained`` the model is the one rsitr ships as its default
(:data:`rsitr.models.DEFAULT_PRETRAINED`); ``--model rsitr-tiny-ViT`` alone is a random tiny model
(text at chance: the numbers then say only what feedback does from image vectors). Say which model
produced any number quoted. Results are printed and written to ``benchmarks/results/feedback.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402
from rsitr.index import ArchiveIndex  # noqa: E402
from rsitr.models import DEFAULT_PRETRAINED, get_pretrained_cfg  # noqa: E402

PAGE = 20
ROUNDS = 2


def read_ucm(data: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Scene per image file, and (test image, its first caption) queries."""
    scenes, queries = {}, {}
    with open(data / "captions_ucm.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            scenes[row["filepath"]] = row["scene"]
            if row["split"] == "test" and row["caption"].strip():
                queries.setdefault(row["filepath"], row["caption"])
    return scenes, sorted(queries.items(), key=lambda item: int(Path(item[0]).stem))


def resolve_model_and_ucm(args: argparse.Namespace) -> Path:
    """Fill ``args.model`` / ``args.pretrained`` with the shipped default when neither is given, and return the
    UC Merced folder ``args.data`` resolved (a missing one ends the benchmark with a message)."""
    if args.model is None and args.pretrained is None:
        args.model, args.pretrained = get_pretrained_cfg(DEFAULT_PRETRAINED).architecture, DEFAULT_PRETRAINED
    data = args.data.resolve()
    if not (data / "captions_ucm.csv").is_file():
        raise SystemExit(f"UC Merced not found at {data} (needs captions_ucm.csv and images/); pass --data")
    return data


def feedback_rounds(index: ArchiveIndex, query: str, relevant: set[str], remove_unwanted: bool) -> list[float]:
    """Precision@PAGE of text alone, then after each round of marking the shown page."""
    wanted, unwanted, precisions = [], [], []
    for round_ in range(ROUNDS + 1):
        hits = index.search(query, PAGE, positive=wanted, negative=unwanted, remove_unwanted=remove_unwanted)
        precisions.append(sum(hit.path in relevant for hit in hits) / PAGE)
        for hit in hits:
            marks = wanted if hit.path in relevant else unwanted
            if hit.chip_id not in wanted and hit.chip_id not in unwanted:
                marks.append(hit.chip_id)
    return precisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/ucm")
    parser.add_argument("--model", help=f"model config name (default: the shipped {DEFAULT_PRETRAINED}'s)")
    parser.add_argument("--pretrained", help=f"OpenCLIP or rsitr tag, or an rsitr training run's .pt file "
                                             f"(default {DEFAULT_PRETRAINED} when --model is not given either)")
    parser.add_argument("--index-dir", type=Path,
                        help="where the UCM index is built and reused (default: one per model under /tmp)")
    parser.add_argument("--queries", type=int, default=0, help="use only the first N queries (0 = all 210)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "feedback.json")
    args = parser.parse_args()
    data = resolve_model_and_ucm(args)

    print(f"CPU: {cpu_model()}")
    print(f"model: {args.model}, pretrained: {args.pretrained or 'none (random weights)'}")
    start = time.perf_counter()
    index_dir = args.index_dir or Path("/tmp") / (
        f"rsitr-feedback-ucm-{args.model}-{Path(args.pretrained).stem if args.pretrained else 'random'}.index")
    index, _ = ArchiveIndex.build(index_dir, data / "images", args.model, args.pretrained, progress=False)
    print(f"index: {index.info()['chips']} chips in {index_dir} ({time.perf_counter() - start:.0f} s)")
    scenes, queries = read_ucm(data)
    if args.queries:
        queries = queries[:args.queries]
    by_scene: dict[str, set[str]] = {}
    for path, scene in scenes.items():
        by_scene.setdefault(scene, set()).add(path)

    labels = ["text alone", "1 round of feedback", "2 rounds of feedback"]
    variants = {"rejected chips removed (the page)": True, "rejected chips kept (Rocchio alone)": False}
    results = {}
    for variant, remove_unwanted in variants.items():
        start = time.perf_counter()
        rounds = np.array([feedback_rounds(index, caption, by_scene[scenes[path]], remove_unwanted)
                           for path, caption in queries])
        seconds = time.perf_counter() - start
        means = rounds.mean(axis=0)
        results[variant] = dict(zip(labels, map(float, means)))
        print(f"{len(queries)} held-out test captions, precision@{PAGE} (relevant = same scene, chance 0.048), "
              f"{variant}, {seconds / len(queries) / (ROUNDS + 1) * 1e3:.0f} ms per search:")
        for label, value in zip(labels, means):
            print(f"  {label:22s} {value:.3f}   x{value / means[0]:.2f}  {value - means[0]:+.3f} vs text alone")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "cpu": cpu_model(), "model": args.model, "pretrained": args.pretrained, "queries": len(queries),
        "page": PAGE, "precision_at_20": results}, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
