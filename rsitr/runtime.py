"""Where a process runs: the torch device, the random seeds and the CPU threads (shared by training, evaluation
and every command that encodes, so none of them imports another for these).

torch is imported only where a function needs it: a search on ONNX Runtime asks for its device (:func:`device_name`)
and threads (:func:`set_threads`, :func:`cpu_threads`) without it."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rsitr.errors import UserError

if TYPE_CHECKING:
    import torch

_threads: int | None = None


def available_devices() -> list[str]:
    """The devices this machine has, as ``--device`` names them: ``cpu``, then ``cuda:N`` and ``mps`` where present."""
    import torch

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
    import torch

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


def device_name(name: str) -> str:
    """:func:`resolve_device`'s device as a name, without importing torch where the answer is the CPU: ``cpu``, and
    ``auto`` on a Linux machine with no NVIDIA driver loaded (no ``/proc/driver/nvidia``, so no CUDA device)."""
    if name == "cpu" or (name == "auto" and sys.platform.startswith("linux")
                         and not Path("/proc/driver/nvidia").exists()):
        return "cpu"
    return str(resolve_device(name))


def _present(device: torch.device) -> bool:
    import torch

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
    import torch

    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch and ONNX Runtime (None keeps their defaults). A torch not imported yet
    takes them from ``OMP_NUM_THREADS`` when it is; ONNX Runtime sessions ask :func:`cpu_threads`."""
    global _threads
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"`threads` must be at least 1 (got {threads})", parameters=("threads",))
    _threads = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def cpu_threads() -> int | None:
    """The threads :func:`set_threads` was given (None: the libraries' defaults)."""
    return _threads
