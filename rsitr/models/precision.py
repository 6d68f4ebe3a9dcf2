"""Numeric precision of the encoders: one place that turns ``precision`` into torch settings.

``fp32`` runs as is; ``bf16`` and ``fp16`` run the towers (and the KER head) under :func:`torch.autocast` on
their device, so weights stay float32 and only matmuls and convolutions run in low precision. Everything
scored from their outputs -- similarities, losses, the EBA bank, metrics -- is computed in float32 from
features cast back with ``.float()``: a bf16 Gram matrix adds about 100x the reference code's quantisation
error to EBAKER's local score.

``auto`` (the default) is bf16 on CUDA devices that support it and on CPUs with native bf16 instructions
(``avx512_bf16`` or ``amx_bf16``), else fp32 (fp16 on older CUDA GPUs). An explicit ``bf16`` on a CPU without
them falls back to fp32 with a warning (PyTorch would emulate it, slower than fp32). ``fp16`` on CUDA is the
reference code's AMP and trains with a :func:`grad_scaler`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import ContextManager

import torch

from rsitr.config import PRECISIONS
from rsitr.errors import RsitrWarning, UserError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto``, and bf16 where the CPU lacks it, resolved to what ``device`` runs: ``fp32``, ``bf16`` or ``fp16``."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "bf16" and not cuda and not cpu_supports_bf16():
        warnings.warn("this CPU has no native bf16 instructions (avx512_bf16 / amx_bf16); running in fp32",
                      RsitrWarning, stacklevel=2)
        return "fp32"
    return precision


def inference_precision(precision: str, device: str | torch.device) -> ContextManager:
    """A context that runs the model at ``precision`` (one of :data:`PRECISIONS`, resolved here) on ``device``."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device = "cpu") -> torch.amp.GradScaler:
    """The loss scaler fp16 training on CUDA needs (fp16 gradients underflow without it); disabled otherwise."""
    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=resolve_precision(precision, device) == "fp16" and kind == "cuda")
