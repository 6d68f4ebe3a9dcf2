"""Find all like these on UC Merced: precision, recall and F1 over the whole archive from a handful of marks (3 + 2,
5 + 5, 10 + 10; no query) and after one and two rounds of marks on text searches, beside Rocchio's top-k at the
same count; and the time to score 1 M chips.

Indexes the 2,100 UC Merced images (one chip each) with the product's :class:`rsitr.index.ArchiveIndex` and asks one
held-out caption per test-split image, as benchmarks/feedback.py does (a hit is relevant when its image has the
query image's scene: 100 of 2,100). Marks are what an analyst does on the first page: round 1 marks the 20 hits of
the text search wanted (same scene) or not wanted and asks "find all" (the text query is the prior); round 2 adds
the marks of the first page (20 chips) of round 1's find-all results. Found chips are compared with the 100
relevant ones: precision, recall, F1 (0 when nothing is found, and for a query whose first page holds no chip of
its scene: then nothing can be marked wanted). Beside it, with the same marks, Rocchio's refined search
(:meth:`ArchiveIndex.search` with the marks, rejected chips removed) cut at the same number of chips, so the two
differ only in how they rank the archive. F1 is listed for several probability thresholds (0.5 is the default).

Scoring time: 1 M synthetic chip vectors as benchmarks/index_scale.py makes them (a Gaussian mixture fitted to the
index's real embeddings), scored by a probe fitted on real marks: from memory, from an index database
(SQLite, the FAISS backend's store) and from a LanceDB table, each the whole stream in batches of
:data:`rsitr.index.archive_index.SCORE_BATCH`.

    python benchmarks/find_all.py [--data ../shared/data/ucm] [--index-dir DIR] [--queries N] [--chips 1000000]
                                  [--trials 3] [--few-marks-only]

Without ``--model`` / ``--pretrained`` the model is rsitr's default (:data:`rsitr.models.DEFAULT_PRETRAINED`).
Results are printed and written to ``benchmarks/results/find_all.json`` with the model and the CPU named.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402
from feedback import read_ucm, resolve_model_and_ucm  # noqa: E402
from index_scale import fit_mixture, synthetic  # noqa: E402
from rsitr.index import ArchiveIndex  # noqa: E402
from rsitr.index.archive_index import SCORE_BATCH  # noqa: E402
from rsitr.index.find_all import logit, score_batches  # noqa: E402
from rsitr.models import DEFAULT_PRETRAINED  # noqa: E402

PAGE = 20
THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
DEFAULT = 0.5


def prf(found: list[int], relevant: set[int]) -> tuple[float, float, float]:
    hits = sum(chip in relevant for chip in found)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(relevant)
    return precision, recall, 2 * precision * recall / (precision + recall) if hits else 0.0


def mark(page: list[int], relevant: set[int], wanted: list[int], unwanted: list[int]) -> None:
    for chip in page:
        if chip not in wanted and chip not in unwanted:
            (wanted if chip in relevant else unwanted).append(chip)


def query_rounds(index: ArchiveIndex, caption: str, relevant: set[int]) -> list[dict]:
    """Per round: per threshold, (precision, recall, F1) of find all and of Rocchio at the same count; seconds."""
    wanted, unwanted, rounds = [], [], []
    page = [hit.chip_id for hit in index.search(caption, PAGE)]
    for _ in range(2):
        mark(page, relevant, wanted, unwanted)
        if not wanted:
            rounds.append(None)
            continue
        start = time.perf_counter()
        found = index.find_all(caption, positive=wanted, negative=unwanted, threshold=min(THRESHOLDS))
        seconds = time.perf_counter() - start
        result = {"seconds": seconds}
        for threshold in THRESHOLDS:
            chips = found.ids[found.probabilities >= threshold].tolist()
            rocchio = [hit.chip_id for hit in index.search(caption, len(chips), positive=wanted,
                                                           negative=unwanted)] if chips else []
            result[threshold] = {"find_all": prf(chips, relevant), "rocchio": prf(rocchio, relevant),
                                 "count": len(chips)}
        rounds.append(result)
        page = found.ids[found.probabilities >= DEFAULT][:PAGE].tolist()
    return rounds


FEW_MARKS = ((3, 2), (5, 5), (10, 10))
"""(wanted, not wanted) marks of the few-marks settings: 3 + 2, 5 + 5 and 20 marks."""


def few_marks(index: ArchiveIndex, by_scene: dict[str, set[int]], trials: int, seed: int) -> dict:
    """F1 of find all from a handful of marks and no query, per setting of :data:`FEW_MARKS`, beside Rocchio's search
    from the same marks cut at the same count: for every scene and ``trials`` draws, the wanted chips are drawn from
    the scene and the not-wanted ones are the chips of other scenes nearest the wanted chips' centroid (what an
    analyst sees beside them on a results page and rejects)."""
    ids, vectors = index.store.embeddings()
    position = {int(chip_id): i for i, chip_id in enumerate(ids)}
    rng = np.random.default_rng(seed)
    results = {}
    for wanted_count, unwanted_count in FEW_MARKS:
        rows = []
        for scene, relevant in sorted(by_scene.items()):
            for _ in range(trials):
                wanted = rng.choice(sorted(relevant), wanted_count, replace=False).tolist()
                centroid = vectors[[position[chip] for chip in wanted]].mean(axis=0)
                nearest = ids[np.argsort(-(vectors @ centroid), kind="stable")].tolist()
                unwanted = [chip for chip in nearest if chip not in relevant][:unwanted_count]
                found = index.find_all(positive=wanted, negative=unwanted)
                chips = found.ids.tolist()
                rocchio = [hit.chip_id for hit in index.search(k=len(chips), positive=wanted, negative=unwanted)] \
                    if chips else []
                # the same probe at even odds (before the archive's share of wanted chips moved its bias)
                shift = logit(found.probe.prevalence) if found.probe.prevalence else 0.0
                even = ids[found.probe.logits(vectors) - shift >= 0].tolist()
                rows.append((prf(chips, relevant), prf(rocchio, relevant), prf(even, relevant), len(chips),
                             len(relevant), len(even)))
        name = f"{wanted_count} + {unwanted_count}"
        results[name] = {
            method: {part: float(np.mean([row[column][index_] for row in rows]))
                     for index_, part in enumerate(("precision", "recall", "f1"))}
            for column, method in enumerate(("find_all", "rocchio", "find_all_even_odds"))}
        results[name]["mean count"] = float(np.mean([row[3] for row in rows]))
        results[name]["mean relevant"] = float(np.mean([row[4] for row in rows]))
        results[name]["mean count at even odds"] = float(np.mean([row[5] for row in rows]))
        results[name]["draws"] = len(rows)
        row = results[name]
        print(f"  {name} marks: find all P {row['find_all']['precision']:.3f} R {row['find_all']['recall']:.3f} "
              f"F1 {row['find_all']['f1']:.3f} | Rocchio at the same count F1 {row['rocchio']['f1']:.3f} | "
              f"{row['mean count']:.0f} found of {row['mean relevant']:.0f} | at even odds F1 "
              f"{row['find_all_even_odds']['f1']:.3f}, {row['mean count at even odds']:.0f} found", flush=True)
    return results


def summarise(per_query: list[list[dict | None]]) -> dict:
    summary = {}
    for number in range(2):
        rows = [rounds[number] for rounds in per_query]
        done = [row for row in rows if row is not None]
        entry = {"queries without a wanted chip to mark": len(rows) - len(done),
                 "mean seconds per find all": float(np.mean([row["seconds"] for row in done]))}
        for threshold in THRESHOLDS:
            def mean(method: str, part: int) -> float:
                return float(np.mean([row[threshold][method][part] if row else 0.0 for row in rows]))

            entry[f"threshold {threshold}"] = {
                method: {"precision": mean(method, 0), "recall": mean(method, 1), "f1": mean(method, 2)}
                for method in ("find_all", "rocchio")}
            entry[f"threshold {threshold}"]["mean count"] = float(np.mean([row[threshold]["count"] if row else 0
                                                                         for row in rows]))
        summary[f"round {number + 1}"] = entry
    return summary


def scoring_time(index: ArchiveIndex, probe, chips: int, seed: int) -> dict:
    """Seconds to score ``chips`` synthetic vectors: from memory, from an index database, from a LanceDB table."""
    from rsitr.index.lance_store import LanceVectors
    from rsitr.index.store import MetadataStore, NewChip
    from rsitr.index.tiling import Window

    _, real = index.store.embeddings()
    vectors = synthetic(fit_mixture(real, 21, seed), chips, seed)
    ids = np.arange(1, chips + 1, dtype=np.int64)
    timings = {}

    def timed(name: str, batches) -> None:
        start = time.perf_counter()
        found = score_batches(probe, batches, DEFAULT)
        timings[name] = {"seconds": time.perf_counter() - start, "found": found.count, "scored": found.scored}
        print(f"  {name:28s} {timings[name]['seconds']:6.2f} s  ({found.count} of {found.scored} found)")

    timed("in memory", ((ids[i:i + SCORE_BATCH], vectors[i:i + SCORE_BATCH]) for i in range(0, chips, SCORE_BATCH)))
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        store = MetadataStore(Path(work))
        file_id = store.add_file("synthetic.tif", 0, 0, "0", 1, 1, None)
        for start in range(0, chips, 50_000):
            store.add_chips([NewChip(file_id, Window(i, 0, 1, 1), None, vectors[i], None)
                             for i in range(start, min(start + 50_000, chips))], [])
        timed("SQLite (FAISS backend)", store.iter_embeddings(SCORE_BATCH))
        store.close()
        try:
            table = LanceVectors.write(str(Path(work) / "vectors.lance"), ids, vectors, index=False)
        except Exception as err:  # lancedb not installed: the other rows stand
            print(f"  LanceDB skipped: {err}")
        else:
            timed("LanceDB table", table.batches(SCORE_BATCH))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/ucm")
    parser.add_argument("--model", help=f"model config name (default: the shipped {DEFAULT_PRETRAINED}'s)")
    parser.add_argument("--pretrained", help=f"tag or checkpoint (default {DEFAULT_PRETRAINED})")
    parser.add_argument("--index-dir", type=Path, help="where the UCM index is built and reused (default under /tmp)")
    parser.add_argument("--queries", type=int, default=0, help="use only the first N queries (0 = all 210)")
    parser.add_argument("--chips", type=int, default=1_000_000, help="synthetic chips to time the scoring on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=3, help="draws of marks per scene in the few-marks settings")
    parser.add_argument("--few-marks-only", action="store_true",
                        help="only the few-marks settings (3 + 2, 5 + 5, 10 + 10), not the query rounds or timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "find_all.json")
    args = parser.parse_args()
    data = resolve_model_and_ucm(args)

    print(f"CPU: {cpu_model()}")
    print(f"model: {args.model}, pretrained: {args.pretrained}")
    start = time.perf_counter()
    index_dir = args.index_dir or Path("/tmp") / f"rsitr-find-all-ucm-{args.model}-{Path(args.pretrained).stem}.index"
    index, _ = ArchiveIndex.build(index_dir, data / "images", args.model, args.pretrained, progress=False)
    print(f"index: {index.info()['chips']} chips in {index_dir} ({time.perf_counter() - start:.0f} s)")
    scenes, queries = read_ucm(data)
    if args.queries:
        queries = queries[:args.queries]
    ids, _ = index.store.embeddings()
    records = index.store.chips(ids.tolist())
    by_scene: dict[str, set[int]] = {}
    for chip_id, record in records.items():
        by_scene.setdefault(scenes[record.path], set()).add(chip_id)

    print(f"few marks, no query ({args.trials} draws per scene; not wanted: other scenes' chips nearest the wanted):")
    few = few_marks(index, by_scene, args.trials, args.seed)
    if args.few_marks_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        args.out.write_text(json.dumps({**previous, "cpu": cpu_model(), "model": args.model,
                                        "pretrained": args.pretrained, "few marks": few}, indent=2) + "\n")
        print(f"written to {args.out} (few marks only)")
        return
    start = time.perf_counter()
    per_query = []
    for number, (path, caption) in enumerate(queries, 1):
        per_query.append(query_rounds(index, caption, by_scene[scenes[path]]))
        if number % 20 == 0:
            print(f"  {number} of {len(queries)} queries ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = summarise(per_query)
    for name, entry in summary.items():
        print(f"{name}: {entry['queries without a wanted chip to mark']} queries without a wanted chip, "
              f"{entry['mean seconds per find all']:.2f} s per find all")
        for threshold in THRESHOLDS:
            row = entry[f"threshold {threshold}"]
            print(f"  p >= {threshold}: find all P {row['find_all']['precision']:.3f} R {row['find_all']['recall']:.3f} "
                  f"F1 {row['find_all']['f1']:.3f} | Rocchio top-k at the same count P "
                  f"{row['rocchio']['precision']:.3f} R {row['rocchio']['recall']:.3f} F1 {row['rocchio']['f1']:.3f} "
                  f"| {row['mean count']:.0f} chips found on average")

    print(f"scoring {args.chips} synthetic chips (batches of {SCORE_BATCH}):")
    caption, path = queries[0][1], queries[0][0]
    first_page = [hit.chip_id for hit in index.search(caption, PAGE)]
    wanted = [chip for chip in first_page if chip in by_scene[scenes[path]]]
    probe = index.probe(caption, positive=wanted, negative=[c for c in first_page if c not in wanted])
    timings = scoring_time(index, probe, args.chips, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "cpu": cpu_model(), "model": args.model, "pretrained": args.pretrained, "queries": len(queries),
        "page": PAGE, "relevant per query": 100, "archive": len(ids), "default threshold": DEFAULT,
        "few marks": few, "rounds": summary, "scoring": {"chips": args.chips, "batch": SCORE_BATCH, "seconds": timings}},
        indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
