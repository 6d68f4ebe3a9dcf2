"""Where a process runs: the torch device, the random seeds and the CPU threads (shared by training, evaluation
and every command that encodes, so none of them imports another for these)."""

from __future__ import annotations

import random

import numpy as np
import torch

from rsitr.errors import UserError


def available_devices() -> list[str]:
    """The devices this machine has, as ``--device`` names them: ``cpu``, then ``cuda:N`` and ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device; ``auto`` is CUDA when available, else the CPU.

    A device this machine does not have (``cuda`` without a GPU, ``cuda:3`` with one, ``mps`` off a Mac, a name torch
    does not know such as ``gpu``) is refused here, as a :class:`UserError` naming the devices it has, so that it is
    one error line before any model is loaded rather than torch's assertion deep inside the first ``.to()``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or not _present(device):
        raise UserError(f"device {name!r} is not on this machine, which has {', '.join(available_devices())}; "
                        f"pass one of those (or auto: cuda when available, else cpu)")
    return device


def _present(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return False


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch operations (None keeps torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1 (got {threads})")
    torch.set_num_threads(threads)
