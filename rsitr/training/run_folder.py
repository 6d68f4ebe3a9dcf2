"""A training run's folder: what a run writes there, when starting or resuming may use it, and its CSV logs.

A folder that holds checkpoints is never overwritten by accident: a new run refuses it unless it resumes it or
is told to overwrite it. A resume is checked (format, model) before anything is written, and its logs are cut
back to the checkpoint, so every step is logged once however often a run is killed.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from rsitr.atomic import write_atomic
from rsitr.config import RunConfig
from rsitr.errors import UserError
from rsitr.models.checkpoint import read_checkpoint

RUN_OUTPUTS = ("checkpoints", "eba", "train_log.csv", "eval_log.csv", "results.json", "results.csv", "keywords.json")
"""What a training run writes into its folder (besides config.yaml and the generated data); --overwrite removes it."""


class RunFolderError(UserError):
    """A run folder that would lose an earlier run, or a checkpoint that cannot be resumed."""


def checkpoint_to_resume(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint a run continues from (None to start afresh), or :class:`RunFolderError` when starting would
    lose an earlier run. Reads only."""
    if resume and overwrite:
        raise RunFolderError("`resume` and `overwrite` exclude each other: continue the run, or start it over",
                             parameters=("resume", "overwrite", "output_dir"))
    checkpoints = sorted((out / "checkpoints").glob("*.pt")) if (out / "checkpoints").is_dir() else []
    if not resume:
        if checkpoints and not overwrite:
            raise RunFolderError(f"{out} holds an earlier run ({len(checkpoints)} checkpoint file(s)); pass `resume` "
                                 f"to continue it, `overwrite` to start over, or another `output_dir`", parameters=("resume", "overwrite", "output_dir"))
        return None
    latest = out / "checkpoints" / "latest.pt"
    if not latest.is_file():
        if checkpoints:
            raise RunFolderError(f"{latest} is missing, so the run in {out} cannot be resumed; pass `overwrite` to "
                                 f"start over", parameters=("resume", "overwrite", "output_dir"))
        return None  # nothing to resume yet: a first run started with --resume
    checkpoint = read_checkpoint(latest)
    if checkpoint is None:
        raise RunFolderError(f"{latest} is not an rsitr training checkpoint; pass `overwrite` to start over",
                             parameters=("resume", "overwrite", "output_dir"))
    return checkpoint


def check_resumable(checkpoint: dict, config: RunConfig, out: Path) -> None:
    """Refuse (:class:`RunFolderError`) to resume a checkpoint of another model or adapter than ``config``'s."""
    recorded = checkpoint["config"]["model"]
    for key in ("name", "focus_adapter"):
        if recorded.get(key) != getattr(config.model, key):
            raise RunFolderError(f"the run in {out} was trained with model.{key}={recorded.get(key)!r}, but the config "
                                 f"gives {getattr(config.model, key)!r}; resume with the run's own config, or "
                                 f"`overwrite` to start over", parameters=("resume", "overwrite", "output_dir"))


def remove_run_outputs(out: Path, keep: set[str]) -> None:
    """Delete what an earlier run wrote into ``out`` (:data:`RUN_OUTPUTS`), except the names in ``keep``."""
    for name in set(RUN_OUTPUTS) - keep:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def truncate_log(path: Path, column: str, last: int) -> int:
    """Drop the rows of a CSV log past ``last`` in ``column``: they belong to training after the checkpoint,
    which the resumed run does again and logs anew. Returns how many were dropped."""
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if int(row[column]) <= last]
    if len(kept) == len(rows):
        return 0

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)

    write_atomic(path, write)
    return len(rows) - len(kept)


def append_csv(path: Path, row: dict) -> None:
    """Append ``row`` to a CSV log, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
