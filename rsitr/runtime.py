"""Where a process runs: the torch device, the random seeds and the CPU threads (shared by training, evaluation
and every command that encodes, so none of them imports another for these)."""

from __future__ import annotations

import random

import numpy as np
import torch

from rsitr.errors import UserError

def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device; ``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
