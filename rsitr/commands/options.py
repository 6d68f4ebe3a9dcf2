"""Command-line options several commands share (not a command itself: :data:`rsitr.cli.COMMANDS` lists those)."""

from __future__ import annotations

import argparse

# The values of rsitr.models.precision.PRECISIONS, repeated so that building the parser imports no torch.
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--precision`` (see :mod:`rsitr.models.precision`)."""
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=default,
                        help="encoders' numeric precision: fp32, or bf16 / fp16 autocast; auto (default): bf16 on "
                             "CUDA and on CPUs with native bf16, else fp32")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--threads`` of commands that run a model."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    add_precision_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
