"""Fine-tune a retrieval model (EBAKER / iEBAKER / CMER / FTF by config); by default the default model's recipe.

A config that names no model (no model.name or model.pretrained) trains the recipe of the shipped default model
(`rsitr models` marks it): its architecture and pretrained text tower, how much of the tower is trained, its
objective and optimiser settings, under whatever the configs set. It runs offline. A config that names an
OpenCLIP tag (configs/paper/*.yaml: ViT-B-32 with the openai weights) needs those weights in the Hugging Face
cache or a connection to download them; without either it stops at once with one line.
--pretrained starts from other weights: an rsitr tag (its architecture too; e.g. remoteclip-vit-b-32, fetched
from the Hugging Face hub on first use), an OpenCLIP tag or file, or an `rsitr train` checkpoint (a warm start).
configs/data/rsitmd.yaml and configs/ebaker_rsitmd.yaml need RSITMD, which is not shipped: download it and point
them at it with --set 'data.datasets=[{name: rsitmd, captions: DIR/dataset_RSITMD.json, images: DIR/images}]'.

Examples (RSICD and UCM-Captions lie in ../shared/data in a checkout; configs/data/*.yaml point at them):
  rsitr train --config configs/data/ucm.yaml --out runs/ucm
  rsitr train --config configs/data/rsicd_ucm.yaml configs/methods/ebaker.yaml --out runs/ebaker --resume
  rsitr train --config configs/data/synthetic.yaml configs/methods/cmer.yaml --set train.epochs=1 --out runs/cmer
  rsitr train --config configs/data/rsicd.yaml configs/methods/ebaker.yaml --pretrained remoteclip-vit-b-32 --out runs/rc
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsitr.commands import non_negative_int, positive_int
from rsitr.commands.options import (PRETRAINED_HELP, add_device_argument, add_precision_argument,
                                    add_progress_argument, add_threads_argument)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, nargs="+",
                        help="YAML run config(s), merged in order (see configs/), e.g. a data file then a method file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train.lr=1e-5 method.ker=false")
    parser.add_argument("--out", dest="output_dir",
                        help="folder for checkpoints, logs and results (overrides output_dir)")
    parser.add_argument("--pretrained", help=f"the weights to start from (overrides model.pretrained; a rsitr tag "
                                             f"sets model.name to its architecture and its activation): {PRETRAINED_HELP}")
    parser.add_argument("--epochs", type=positive_int, help="overrides train.epochs")
    parser.add_argument("--batch-size", type=positive_int, help="overrides train.batch_size")
    parser.add_argument("--workers", type=non_negative_int, help="image loading processes (overrides data.num_workers)")
    add_device_argument(parser, default=None)  # None: the config's device and precision
    add_precision_argument(parser, default=None)
    add_threads_argument(parser)
    parser.add_argument("--strict", action="store_true",
                        help="refuse caption files with empty captions (default: drop them with a warning)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/latest.pt")
    parser.add_argument("--keep-epochs", action="store_true",
                        help="keep every epoch's checkpoint (epoch_NNN.pt; default: only best.pt, the best by "
                             "validation mR, and latest.pt, to resume)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder that holds an earlier run (its checkpoints and logs go)")
    add_progress_argument(parser)


def overrides(args: argparse.Namespace) -> list[str]:
    flat = {"output_dir": args.output_dir, "train.epochs": args.epochs, "train.batch_size": args.batch_size,
            "data.num_workers": args.workers, "device": args.device, "precision": args.precision}
    flags = ["data.strict=true"] * args.strict + ["train.keep_epochs=true"] * args.keep_epochs
    return list(args.set) + flags + pretrained_overrides(args.pretrained) + \
        [f"{key}={value}" for key, value in flat.items() if value is not None]


def pretrained_overrides(pretrained: str | None) -> list[str]:
    """``--pretrained``'s config entries: a registry tag names its architecture and decides its activation (the
    configs' ``quick_gelu`` was set for the weights they name); other values set ``model.pretrained`` alone."""
    from rsitr.models.pretrained import check_model_arguments
    from rsitr.models.registry import get_pretrained_cfg, is_pretrained_tag

    if pretrained is None:
        return []
    if not is_pretrained_tag(pretrained):
        return [f"model.pretrained={pretrained}"]
    entry = get_pretrained_cfg(pretrained)
    check_model_arguments(entry.architecture, pretrained)  # a hub tag neither cached nor reachable: one line now
    return [f"model.pretrained={pretrained}", f"model.name={entry.architecture}", "model.quick_gelu=null"]


def run_config(args: argparse.Namespace):
    """The run's config: the files, ``--set`` and the flags, over the default model's recipe when they name no
    model (see :func:`rsitr.config.load_config`)."""
    from rsitr.config import load_config
    from rsitr.models.registry import default_training_recipe

    return load_config(args.config, overrides(args), recipe=default_training_recipe())


def INTERRUPTED_HINT(args: argparse.Namespace) -> str:  # noqa: N802 - the name the command line looks up
    """What Ctrl-C leaves behind: a run to resume from its last finished epoch, or nothing checkpointed yet."""
    out = Path(run_config(args).output_dir)
    if (out / "checkpoints" / "latest.pt").is_file():
        return "the last finished epoch is checkpointed: run the same command with --resume to continue"
    return (f"no epoch had finished, so nothing is checkpointed in {out}: run the same command again to start "
            f"over (its log is cleared)")


def fit_and_test(config, args: argparse.Namespace):
    """Train (continuing with ``--resume``), then evaluate each dataset's own test split, as the papers report a
    model trained on merged datasets. Returns the trainer and the evaluations by dataset (None off rank 0)."""
    from rsitr.config import ModelConfig
    from rsitr.models.registry import DEFAULT_PRETRAINED, default_training_recipe
    from rsitr.runtime import set_threads
    from rsitr.training.trainer import Trainer

    set_threads(args.threads)
    recipe = default_training_recipe()
    if recipe is not None and config.model == ModelConfig(**recipe["model"]):
        print(f"model: {config.model.name} by the recipe of the default model {DEFAULT_PRETRAINED} (the configs "
              f"name no model)")
    else:
        print(f"model: {config.model.name}, initialised from "
              f"{config.model.pretrained or 'the pretrained towers its config names, random weights elsewhere'}")
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
    best = trainer.load_best()
    if best is not None:
        print(f"testing the best epoch by validation mR: epoch {best['epoch']} (mR {best['mR']:.2f}; "
              f"{trainer.out / 'checkpoints' / 'best.pt'}, what the run folder stands for)")
    return trainer, trainer.test(progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    from rsitr.evaluate.report import format_table, write_reports

    config = run_config(args)
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
