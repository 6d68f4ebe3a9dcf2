"""The papers' ablation rows trained on real data, on this CPU, and one table of what each adds.

Two suites. `small` (default): each row is `rsitr train --config configs/real/base.yaml configs/real/<row>.yaml`
(rsitr-small from random weights on RSICD train: no pretrained CLIP exists on these machines). `minilm`: each row
is `rsitr train --config configs/data/rsicd_ucm.yaml configs/real/minilm/base.yaml configs/real/minilm/<row>.yaml`
(the pretrained all-MiniLM-L6-v2 text tower with a random-init image tower, on RSICD + UC Merced train): text
tower (from scratch / frozen / last 2 layers trained) x image tower (ViT-64 / ResNet-18), the last-2-layers row
trained twice as long (`unfrozen2_epochs4`), then EBAKER's parts on the MiniLM + ResNet-18 pair. Each run lies
in its own folder under --out, resumed when it is there already (a finished run is not trained again; its test
results are kept in its folder and reused while its checkpoint is unchanged). Every trained model is evaluated
on the RSICD and UC Merced test splits (`../shared/data`), as trained and with the inference-time rows: + SAR
(rsitr's rank-sum reading), FTF two-stage retrieval, 4 orientations (each image's embedding averaged over its 4
rotations) alone and + SAR, and, for models trained with local similarity, the global score alone. Rows with several seeds print mean +- std of mR.

    python benchmarks/real_ablation.py                       # all rows; 3 seeds for the seeded rows
    python benchmarks/real_ablation.py --quick               # a smoke run: 20 steps per row, 1 epoch
    python benchmarks/real_ablation.py --rows baseline ebaker --seeds 0
    python benchmarks/real_ablation.py --suite minilm        # the pretrained-language-tower suite
    python benchmarks/real_ablation.py --suite minilm --trained-only   # the table of the runs finished so far
    python benchmarks/real_ablation.py --suite lite0         # the ImageNet-pretrained image tower suite

Results: printed, and written as JSON to --json (default benchmarks/results/real_ablation.json; a --quick run keeps
to runs/real-ablation-quick/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).parent))

from _measure import cpu_model  # noqa: E402

from rsitr.evaluate.metrics import METRIC_NAMES  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Suite(NamedTuple):
    """A family of rows: the configs every row composes with, the rows, and where results go by default."""

    base: tuple[str, ...]
    row_dir: str
    rows: tuple[str, ...]
    seeded: tuple[str, ...]  # rows run with every seed of --seeds; the others with the first only
    out: str
    json: str
    models: str  # what the numbers come from, printed with them


SUITES = {
    "small": Suite(("configs/real/base.yaml",), "configs/real", ("baseline", "local", "ker", "eba", "ebaker",
                                                                 "iebaker_independent"),
                   ("baseline", "ebaker"), "runs/real-ablation", "benchmarks/results/real_ablation.json",
                   "model rsitr-small trained from scratch (random init) on RSICD train"),
    "minilm": Suite(("configs/data/rsicd_ucm.yaml", "configs/real/minilm/base.yaml"), "configs/real/minilm",
                    ("baseline", "vit64", "scratch_text", "unfrozen2", "unfrozen2_epochs4", "eba", "local", "ker",
                     "ebaker"),
                    ("baseline", "unfrozen2"), "runs/real-ablation-minilm", "benchmarks/results/minilm_ablation.json",
                    "pretrained all-MiniLM-L6-v2 text tower (frozen unless the row says) + image tower from random "
                    "init, trained on RSICD + UC Merced train"),
    "lite0": Suite(("configs/data/rsicd_ucm.yaml", "configs/real/lite0/base.yaml"), "configs/real/lite0",
                   ("locked", "text2", "unlocked2", "unlocked2_text2", "text2_views4", "local", "eba", "ker",
                    "views8", "views4_local", "views4_ker", "views4_eba", "lite2", "lite1_views4", "lite2_views4",
                    "views4_rsicd_only", "views4_ucm_only", "views4_epochs6"),
                   ("locked", "text2", "text2_views4"),
                   "runs/real-ablation-lite0",
                   "benchmarks/results/lite0_ablation.json",
                   "ImageNet-pretrained EfficientNet-Lite0 image tower (locked unless the row says; its frozen stages' "
                   "features cached per orientation) + pretrained all-MiniLM-L6-v2 text tower, MLP projections, "
                   "trained on RSICD + UC Merced train"),
}
TEST_SETS = {"rsicd": ("../shared/data/rsicd/dataset_rsicd.json", "../shared/data/rsicd/images"),
             "ucm": ("../shared/data/ucm/dataset_ucm.json", "../shared/data/ucm/images")}
QUICK = ["train.max_steps_per_epoch=20", "train.epochs=1", "method.drop_epoch=1"]
ROWS_VERSION = 3  # raise when `evaluate` gains or changes rows, so kept test results are computed again


def train(suite: Suite, row: str, seed: int, out: Path, extra: list[str]) -> float:
    """Train (or resume) one row; returns the wall time of this call in seconds."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "rsitr.cli", "train", "--config", *suite.base,
               f"{suite.row_dir}/{row}.yaml", "--out", str(out), "--resume", "--no-progress",
               "--set", f"train.seed={seed}", *extra]
    subprocess.run(command, cwd=REPO, check=True)
    return time.perf_counter() - start


def evaluate(checkpoint: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Rows (as trained, + SAR, FTF two-stage; and global only for models trained with local) per test set."""
    import dataclasses
    import warnings

    from rsitr.config import EvalConfig
    from rsitr.data import load_corpus
    from rsitr.evaluate.runner import encode_corpus, evaluate_encoded
    from rsitr.models import create_model
    from rsitr.data.augment import ORIENTATION_COUNTS

    loaded = create_model(None, str(checkpoint))
    model, recipe = loaded.model, loaded.recipe
    config = EvalConfig(batch_size=256, sar=True, two_stage=True, recall_k=50, fine_exhaustive=False)
    results = {}
    for name, (captions, images) in TEST_SETS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RSICD's 3 empty captions: reported by `rsitr data inspect`
            corpus = load_corpus(REPO / captions, REPO / images, name=name).split("test")
        encoded = encode_corpus(model, corpus, config.batch_size, progress=False,
                                keep_padding=recipe.keeps_padding)
        evaluation = evaluate_encoded(encoded, recipe, config, name="model")
        results[name] = {_row_name(key): value for key, value in evaluation.rows.items()}
        # test-time orientation averaging (each image's embedding the mean over its 4 rotations), alone and with SAR
        oriented = encode_corpus(model, corpus, config.batch_size, progress=False, keep_padding=recipe.keeps_padding,
                                 image_views=ORIENTATION_COUNTS[4])
        rows = evaluate_encoded(oriented, recipe, EvalConfig(sar=True), name="model").rows
        results[name].update({{"as trained": "4 orientations", "+ SAR": "4 orientations + SAR"}[_row_name(key)]: value
                              for key, value in rows.items()})
        if recipe.local:  # what the local score adds at inference, apart from what its loss did to the model
            alone = evaluate_encoded(encoded, dataclasses.replace(recipe, local=False), EvalConfig(), name="model")
            results[name]["global only"] = alone.rows["model"]
    return results


def evaluated(checkpoint: Path) -> dict[str, dict[str, dict[str, float]]]:
    """`evaluate`, kept beside the checkpoint and reused while the checkpoint and this script's rows are unchanged."""
    cache = checkpoint.parent.parent / "test_results.json"
    stamp = {"checkpoint_mtime_ns": checkpoint.stat().st_mtime_ns, "rows_version": ROWS_VERSION}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if all(saved.get(key) == value for key, value in stamp.items()):
            return saved["results"]
    results = evaluate(checkpoint)
    cache.write_text(json.dumps({**stamp, "results": results}, indent=1))
    return results


def _row_name(key: str) -> str:
    if key == "model":
        return "as trained"
    if "SAR" in key:
        return "+ SAR"
    if "two-stage" in key:
        return "FTF two-stage"
    return key.removeprefix("model ")


def summarize(runs: list[dict]) -> list[dict]:
    """One line per (row, inference variant, test set): mean (and std over seeds) of each metric."""
    lines = {}
    for run in runs:
        for test_set, variants in run["results"].items():
            for variant, metrics in variants.items():
                lines.setdefault((run["row"], variant, test_set), []).append((metrics, run["seconds"]))
    table = []
    for (row, variant, test_set), items in lines.items():
        line = {"row": row, "variant": variant, "test_set": test_set, "seeds": len(items),
                "train_minutes": statistics.mean(seconds for _, seconds in items) / 60}
        for metric in METRIC_NAMES:
            values = [metrics[metric] for metrics, _ in items]
            line[metric] = statistics.mean(values)
            line[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
        table.append(line)
    return table


def format_lines(table: list[dict]) -> str:
    header = (f"{'row':22s} {'variant':14s} {'test':6s} {'seeds':>5s} | "
              + " ".join(f"{m:>8s}" for m in METRIC_NAMES[:-1]) + f" | {'mR':>13s} | train min")
    text = [header, "-" * len(header)]
    for line in table:
        std = f" +- {line['mR_std']:.2f}" if line["mR_std"] is not None else ""
        text.append(f"{line['row']:22s} {line['variant']:14s} {line['test_set']:6s} {line['seeds']:5d} | "
                    + " ".join(f"{line[m]:8.2f}" for m in METRIC_NAMES[:-1])
                    + f" | {line['mR']:6.2f}{std:7s} | {line['train_minutes']:9.1f}")
    return "\n".join(text)


def format_markdown(table: list[dict]) -> str:
    """docs/RESULTS.md's table: a line per row and inference variant, RSICD recalls, mR on RSICD and UC Merced."""
    by_key = {(line["row"], line["variant"], line["test_set"]): line for line in table}
    text = ["| row | inference | RSICD i2t R@1/5/10 | RSICD t2i R@1/5/10 | RSICD mR | UCM mR | seeds | train min |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (row, variant, test_set), rsicd in by_key.items():
        if test_set != "rsicd":
            continue
        ucm = by_key.get((row, variant, "ucm"))

        def mr(line: dict | None) -> str:
            if line is None:
                return ""
            return f"{line['mR']:.2f}" + (f" +- {line['mR_std']:.2f}" if line["mR_std"] is not None else "")

        recalls = [" / ".join(f"{rsicd[f'{d}_R@{k}']:.2f}" for k in (1, 5, 10)) for d in ("i2t", "t2i")]
        text.append(f"| {row} | {variant} | {recalls[0]} | {recalls[1]} | {mr(rsicd)} | {mr(ucm)} | "
                    f"{rsicd['seeds']} | {rsicd['train_minutes']:.0f} |")
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="small")
    parser.add_argument("--rows", nargs="+", help="rows of the suite (default: all of them)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps of one epoch per row")
    parser.add_argument("--trained-only", action="store_true",
                        help="train nothing: report the runs whose training finished, list the others as missing")
    parser.add_argument("--out", help="folder of the runs, resumed if present (default the suite's, e.g. "
                                      "runs/real-ablation; with --quick that folder + '-quick')")
    parser.add_argument("--json", help="where the results go (default the suite's, e.g. "
                                       "benchmarks/results/real_ablation.json; with --quick in the --quick runs' "
                                       "folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    rows = args.rows or list(suite.rows)
    unknown = sorted(set(rows) - set(suite.rows))
    if unknown:
        parser.error(f"rows not in suite {args.suite}: {', '.join(unknown)} (choose from {', '.join(suite.rows)})")
    extra = (QUICK if args.quick else []) + list(args.set)
    print(f"CPU: {cpu_model()}; {suite.models}{' (--quick)' if args.quick else ''}")
    runs, missing = [], []
    quick_out = f"{suite.out}-quick"
    for row in rows:
        for seed in (args.seeds if row in suite.seeded else args.seeds[:1]):
            folder = REPO / (args.out or (quick_out if args.quick else suite.out)) / f"{row}-seed{seed}"
            log = folder / "train_seconds.json"  # written when training finished; keeps the training call's time
            if not log.is_file() and args.trained_only:
                missing.append({"row": row, "seed": seed})
                print(f"{row} seed {seed}: not trained (--trained-only)", flush=True)
                continue
            if not log.is_file():
                seconds = train(suite, row, seed, folder, extra)
                # the load average tells whether the wall time was measured on free cores or shared ones
                log.write_text(json.dumps({"seconds": seconds, "load_average": os.getloadavg()[1]}))
            timing = json.loads(log.read_text())
            runs.append({"row": row, "seed": seed, "seconds": timing["seconds"],
                         "load_average": timing.get("load_average"),
                         "results": evaluated(folder / "checkpoints" / "latest.pt")})
            print(f"{row} seed {seed}: RSICD test mR {runs[-1]['results']['rsicd']['as trained']['mR']:.2f}",
                  flush=True)
    table = summarize(runs)
    print(format_lines(table))
    print(format_markdown(table))
    out = REPO / (args.json or (f"{quick_out}/{Path(suite.json).name}" if args.quick else suite.json))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_model(), "suite": args.suite, "models": suite.models, "quick": args.quick, "overrides": extra, "runs": runs,
                               "not_trained": missing,
                               "table": table}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
