"""The numeric precision the encoders run in: one setting (``fp32 | bf16 | fp16 | auto``) for eval, train and index.

Only the towers (and the KER head) run under autocast: their matrix products are what lower precision
speeds up. Everything scored from their outputs -- similarities, losses, the EBA bank, metrics -- is
computed in float32 from features cast back with ``.float()``: a bf16 Gram matrix adds about 100x the
reference code's quantisation error to EBAKER's local score.

``auto`` picks bf16 on CUDA devices that support it and on CPUs with native bf16 instructions
(``avx512_bf16`` or ``amx_bf16``), else fp32 (fp16 on older CUDA GPUs). An explicit ``bf16`` on a CPU
without them falls back to fp32 with a warning (PyTorch would emulate it, slower than fp32). ``fp16`` is
the reference code's CUDA AMP and goes with a :func:`grad_scaler` in training; on a CPU it is refused.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import TYPE_CHECKING, ContextManager

from rsitr.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used, so the command line parser can read PRECISIONS cheaply
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = "encoders' numeric precision (default auto: bf16 on CUDA and on CPUs with native bf16, else fp32)"
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
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
    """``auto`` and unsupported requests resolved to what ``device`` runs: ``fp32``, ``bf16`` or ``fp16``."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("precision fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    if precision == "bf16" and not cuda and not cpu_supports_bf16():
        warnings.warn("this CPU has no native bf16 instructions (avx512_bf16 / amx_bf16); running in fp32",
                      stacklevel=2)
        return "fp32"
    return precision


def autocast(precision: str, device: str | torch.device = "cpu") -> ContextManager:
    """Autocast for a *resolved* precision on ``device`` (a no-op for fp32)."""
    import torch

    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, DTYPES[precision]))


def grad_scaler(precision: str, device: str | torch.device = "cpu") -> torch.amp.GradScaler:
    """The loss scaler fp16 training needs (fp16 gradients underflow without it); disabled otherwise."""
    import torch

    kind = torch.device(device).type
    return torch.amp.GradScaler(kind, enabled=precision == "fp16" and kind == "cuda")
