"""Fine-tune a CLIP model for remote sensing image-text retrieval (EBAKER / iEBAKER / CMER / FTF by config).

Examples:
  rsitr train --config configs/data/rsitmd.yaml configs/methods/ebaker.yaml
  rsitr train --config configs/data/rsicd.yaml configs/methods/iebaker_independent.yaml --output-dir runs/ie --resume
  rsitr train --config configs/data/synthetic.yaml configs/methods/ebaker.yaml --set method.eba=false train.epochs=2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsitr.commands.options import add_device_argument, add_precision_argument, add_progress_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, nargs="+",
                        help="YAML run config(s), merged in order (see configs/), e.g. a data file then a method file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train.lr=1e-5 method.ker=false")
    parser.add_argument("--output-dir", help="where checkpoints, logs and results go (overrides output_dir)")
    parser.add_argument("--epochs", type=int, help="overrides train.epochs")
    parser.add_argument("--batch-size", type=int, help="overrides train.batch_size")
    add_device_argument(parser, default=None)  # None: the config's device and precision
    add_precision_argument(parser, default=None)
    parser.add_argument("--strict", action="store_true",
                        help="refuse caption files with empty captions (default: drop them with a warning)")
    parser.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoints/latest.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder that holds an earlier run (its checkpoints and logs go)")
    add_progress_argument(parser)


def overrides(args: argparse.Namespace) -> list[str]:
    flat = {"output_dir": args.output_dir, "train.epochs": args.epochs, "train.batch_size": args.batch_size,
            "device": args.device, "precision": args.precision}
    flags = ["data.strict=true"] if args.strict else []
    return list(args.set) + flags + [f"{key}={value}" for key, value in flat.items() if value is not None]


def INTERRUPTED_HINT(args: argparse.Namespace) -> str:  # noqa: N802 - the name the command line looks up
    """What Ctrl-C leaves behind: a run to resume from its last finished epoch, or nothing checkpointed yet."""
    from rsitr.config import load_config

    out = Path(load_config(args.config, overrides(args)).output_dir)
    if (out / "checkpoints" / "latest.pt").is_file():
        return "the last finished epoch is checkpointed: run the same command with --resume to continue"
    return (f"no epoch had finished, so nothing is checkpointed in {out}: run the same command again to start "
            f"over (its log is cleared)")


def fit_and_test(config, args: argparse.Namespace):
    """Train (continuing with ``--resume``), then evaluate each dataset's own test split, as the papers report a
    model trained on merged datasets. Returns the trainer and the evaluations by dataset (None off rank 0)."""
    from rsitr.training.trainer import Trainer

    trainer = Trainer(config, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    if trainer.resumed:
        print(f"resumed from epoch {trainer.epoch} (step {trainer.step})")
    elif args.resume or trainer.dropped_log_rows:
        dropped = f"; the {trainer.dropped_log_rows} logged steps of the interrupted attempt are dropped from " \
                  f"train_log.csv" if trainer.dropped_log_rows else ""
        print(f"no checkpoint in {trainer.out} to resume (no epoch had finished): training starts from the "
              f"beginning{dropped}")
    print(trainer.corpus.summary())
    trainer.fit()
    if not trainer.dist.is_main:
        return trainer, None
    return trainer, trainer.test(progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    from rsitr.config import load_config
    from rsitr.evaluate.report import format_table, write_reports

    config = load_config(args.config, overrides(args))
    trainer, evaluations = fit_and_test(config, args)
    if evaluations is None:
        return 0
    for dataset, evaluation in evaluations.items():
        print(format_table(evaluation.rows, title=f"{dataset}: {config.eval.split} split"))
    if evaluations:
        rows = {(f"{dataset}: {row}" if len(evaluations) > 1 else row): metrics
                for dataset, evaluation in evaluations.items() for row, metrics in evaluation.rows.items()}
        timings = {dataset: evaluation.timings for dataset, evaluation in evaluations.items()}
        json_path, _ = write_reports(rows, trainer.out, {"timings": timings})
        print(f"results written to {json_path}")
    return 0
