"""Checkpoint files: the one place that reads them with torch, and the one check that a named file is there.

An ``rsitr train`` checkpoint is a dict marked ``format: CHECKPOINT_FORMAT`` (model, config, optimiser ...);
anything else a ``pretrained`` value names (an OpenCLIP checkpoint, a safetensors file) is OpenCLIP's to load.
:func:`read_checkpoint` tells them apart cheaply: it memory-maps the file, so probing a large OpenCLIP file
reads its structure, not its tensors, and an rsitr checkpoint is read once, by that same call.

Every file is read with ``weights_only=True``: torch's restricted unpickler admits tensors and plain types
(dicts, lists, numbers, strings), which is all an rsitr checkpoint holds, and never calls a function the file
names, so a model file cannot run code. A file that needs more is one :class:`CheckpointError` line.

Importing this module imports no torch (the command line checks ``--pretrained`` values with it).
"""

from __future__ import annotations

from pathlib import Path

from rsitr.errors import UserError
from rsitr.paths import regular_file

CHECKPOINT_FORMAT = "rsitr-checkpoint-v1"
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".safetensors"})
LATEST_CHECKPOINT = Path("checkpoints") / "latest.pt"
"""Where in its output folder an ``rsitr train`` run keeps its latest checkpoint (what a resume continues)."""
BEST_CHECKPOINT = Path("checkpoints") / "best.pt"
"""Where an ``rsitr train`` run keeps the checkpoint of its best epoch by validation mR (what its folder stands for)."""


class CheckpointError(UserError):
    """A missing checkpoint, one of another kind or architecture, or a model name that contradicts it."""

    @classmethod
    def missing(cls, path: str | Path) -> CheckpointError:
        return cls(f"checkpoint {path} does not exist; pass an existing file or a pretrained tag")


def check_exists(pretrained: str | None) -> None:
    """Refuse a ``pretrained`` value that names a checkpoint file (by its suffix) that is not there, or a path that
    is there but neither a folder (a run) nor a regular file (a FIFO would block the loader)."""
    if not pretrained:
        return
    if Path(pretrained).exists() and not Path(pretrained).is_dir():
        regular_file(pretrained, "checkpoint")
    elif Path(pretrained).suffix in CHECKPOINT_SUFFIXES and not Path(pretrained).is_file():
        raise CheckpointError.missing(pretrained)


def run_checkpoint(pretrained: str | None) -> str | None:
    """A run folder (``rsitr train``'s output folder) stands for its best checkpoint by validation mR, or its latest
    where it has none (no validation split, or a run of an earlier rsitr); other values pass unchanged."""
    if pretrained and Path(pretrained).is_dir():
        for checkpoint in (BEST_CHECKPOINT, LATEST_CHECKPOINT):
            if (Path(pretrained) / checkpoint).is_file():
                return str(Path(pretrained) / checkpoint)
    return pretrained


def weights_label(name: str, pretrained: str | None) -> str:
    """What result tables call model ``name`` with weights ``pretrained`` (as :class:`LoadedModel` records it): a
    run's checkpoint as ``RUN/best`` (``RUN/latest``, ``RUN/epoch_003``), another weights file as ``name (FILE)``,
    and a tag or random weights by the model's name, so a trained checkpoint never reads as the shipped model."""
    if not pretrained or not Path(pretrained).is_file():
        return name
    path = Path(pretrained)
    if path.parent.name == BEST_CHECKPOINT.parent.name:  # RUN/checkpoints/NAME.pt
        return f"{path.parent.parent.name}/{path.stem}"
    return f"{name} ({path.name})"


def _torch_load(path: str | Path, mmap: bool) -> object:
    import pickle
    import re

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL ([\w.]+)", str(err))  # torch names the first object it refused to build
        if named is None:  # not a pickle at all: the callers' "not a checkpoint" cases
            raise
        raise CheckpointError(f"{path} asks to build {named.group(1)}, more than tensors and plain types, and "
                              f"loading it could run code, so rsitr does not; save the model's state_dict "
                              f"(or a safetensors file) instead") from None


def read_checkpoint(path: str | Path) -> dict | None:
    """An ``rsitr train`` checkpoint as a dict (its tensors memory-mapped until used); None when ``path`` is no
    file or another kind (e.g. OpenCLIP's, or not torch's zip format, which every rsitr checkpoint is)."""
    if not Path(path).is_file():
        return None
    try:
        checkpoint = _torch_load(path, mmap=True)
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001 - not a torch zip file (e.g. safetensors): not ours, OpenCLIP may still read it
        return None
    if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        return checkpoint
    return None


def read_state_dict(path: str | Path) -> dict:
    """The weights a file holds (a ``state_dict``, bare or under that key; {} for another layout), or a
    :class:`CheckpointError` when torch cannot read the file at all."""
    try:
        loaded = _torch_load(path, mmap=False)
    except CheckpointError:
        raise
    except Exception as err:  # pickle, zip and torch raise many types for a file that is no checkpoint
        raise CheckpointError(f"{path} is not a checkpoint torch can read ({type(err).__name__})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    return loaded if isinstance(loaded, dict) else {}
