"""Fine-tune a CLIP model for remote sensing image-text retrieval (EBAKER / iEBAKER / CMER / FTF by config).

Examples:
  rsitr train --config configs/ebaker_rsitmd.yaml
  rsitr train --config configs/data/rsicd.yaml configs/methods/iebaker_independent.yaml --output-dir runs/ie --resume
  rsitr train --config configs/tiny_synthetic.yaml --set method.eba=false train.epochs=2
"""

from __future__ import annotations

import argparse

from rsitr.precision import PRECISION_HELP, PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, nargs="+",
                        help="YAML run config(s), merged in order (see configs/), e.g. a data file then a method file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train.lr=1e-5 method.ker=false")
    parser.add_argument("--output-dir", help="where checkpoints, logs and results go (overrides output_dir)")
    parser.add_argument("--epochs", type=int, help="overrides train.epochs")
    parser.add_argument("--batch-size", type=int, help="overrides train.batch_size")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (overrides device)")
    parser.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP + " (overrides precision)")
    parser.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoints/latest.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _overrides(args: argparse.Namespace) -> list[str]:
    flat = {"output_dir": args.output_dir, "train.epochs": args.epochs, "train.batch_size": args.batch_size,
            "device": args.device, "precision": args.precision}
    return list(args.set) + [f"{key}={value}" for key, value in flat.items() if value is not None]


def run(args: argparse.Namespace) -> int:
    from rsitr.config import load_config
    from rsitr.evaluate.report import format_table, write_reports
    from rsitr.evaluate.runner import evaluate_model
    from rsitr.training.trainer import Trainer

    config = load_config(args.config, _overrides(args))
    trainer = Trainer(config, progress=not args.no_progress)
    if args.resume and trainer.resume():
        print(f"resumed from epoch {trainer.epoch} (step {trainer.step})")
    print(trainer.corpus.summary())
    trainer.fit()
    if not trainer.dist.is_main:
        return 0
    test = trainer.corpus.split(config.eval.split)
    if len(test):
        evaluation = evaluate_model(trainer.model, test, config.method, config.eval, trainer.device,
                                    name=config.model.name, progress=not args.no_progress, precision=trainer.precision)
        print(format_table(evaluation.rows, title=f"{config.eval.split} split"))
        json_path, _ = write_reports(evaluation.rows, trainer.out, {"timings": evaluation.timings})
        print(f"results written to {json_path}")
    return 0
