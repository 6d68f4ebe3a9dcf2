"""Numeric precision and CPU threads of inference: one place that turns ``--precision`` / ``--threads`` into torch settings.

``fp32`` runs as is; ``bf16`` and ``fp16`` run the model under :func:`torch.autocast` on its device (CPU
autocast supports both), so weights stay float32 and only matmuls and convolutions run in low precision.
Outputs of the encoders are cast back to float32 by their callers.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from rsitr.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def inference_precision(precision: str, device: str | torch.device) -> ContextManager:
    """A context that runs the model at ``precision`` (one of :data:`PRECISIONS`) on ``device``."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch operations (None keeps torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1 (got {threads})")
    torch.set_num_threads(threads)
