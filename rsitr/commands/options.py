"""Command-line options several commands share (not a command itself: :data:`rsitr.cli.COMMANDS` lists those)."""

from __future__ import annotations

import argparse

# The values of rsitr.models.precision.PRECISIONS, repeated so that building the parser imports no torch.
PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--precision`` and ``--threads`` of commands that run a model (see :mod:`rsitr.models.precision`)."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="inference precision: fp32, or bf16 / fp16 autocast (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
