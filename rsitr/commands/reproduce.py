"""Reproduce a paper row: train as configured, evaluate on each dataset's own test split, print the paper's table.

The paper's published numbers come from published_results.yaml beside the config (or --published); a number
that has not been checked against the paper is not listed there and not printed. Needs RSICD, RSITMD and
NWPU-Captions where the config points and the OpenAI CLIP weights in the Hugging Face cache (or a connection);
a checkout has RSICD and UCM-Captions only, so the paper's own rows do not run in it.

Examples (the first runs in a checkout, on generated data; the second needs the paper's data and weights):
  rsitr reproduce --config configs/data/synthetic.yaml configs/methods/ebaker.yaml --out runs/reproduce-synthetic \
      --published configs/paper/published_results.yaml --method ebaker
  rsitr reproduce --config configs/paper/iebaker_joint.yaml --out runs/iebaker --resume
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rsitr.commands.train import INTERRUPTED_HINT as INTERRUPTED_HINT  # the same run folder, the same hint
from rsitr.commands.train import add_arguments as add_train_arguments, fit_and_test, run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    parser.add_argument("--published", help="published-results YAML (default: published_results.yaml beside the "
                                            "first config)")
    parser.add_argument("--method", help="method key in the published results (default: the first config's stem)")


def _text_tower_note(model_name: str) -> str:
    """' except its pretrained text tower X' for models with a Hugging Face text tower, else ''."""
    from rsitr.models.registry import register_model_configs

    tower = ((register_model_configs().get_model_config(model_name) or {}).get("text_cfg") or {}).get("hf_model_name")
    return f" except its pretrained text tower {tower}" if tower else ""


def run(args: argparse.Namespace) -> int:
    from rsitr.evaluate.paper import load_published, paper_table
    from rsitr.evaluate.report import write_reports
    from rsitr.training.corpus import check_files

    config = run_config(args)
    check_files(config.data)
    first = Path(args.config[0])
    published = load_published(args.published or first.parent / "published_results.yaml")
    method = args.method or first.stem
    trainer, evaluations = fit_and_test(config, args)
    if evaluations is None:
        return 0
    ours = {dataset: evaluation.rows for dataset, evaluation in evaluations.items()}
    data = ", ".join(spec.name or Path(spec.captions).stem for spec in config.data.datasets) or "generated data"
    print(paper_table(ours, published, method,
                      title=f"{method}: paper ({published.source or 'published'}) vs this run ({config.model.name}, "
                            f"initialised from {config.model.pretrained or 'random weights'}"
                            f"{'' if config.model.pretrained else _text_tower_note(config.model.name)}; trained on {data} train)"))
    rows = {f"{dataset}: {row}": metrics for dataset, rows in ours.items() for row, metrics in rows.items()}
    json_path, _ = write_reports(rows, trainer.out, {"published_source": published.source}, stem="reproduce")
    print(f"results written to {json_path}")
    return 0
