"""Command-line options several commands share, defined once so that they mean the same everywhere (not a
command itself: :data:`rsitr.cli.COMMANDS` lists those).

Building a parser with them imports no torch: :mod:`rsitr.models.pretrained` reads the shipped tags without it, and
the precisions are :mod:`rsitr.config`'s, which imports neither.
"""

from __future__ import annotations

import argparse
import os

from rsitr.commands import non_negative_int, positive_int
from rsitr.config import PRECISIONS, RUNTIMES
from rsitr.errors import UserError
from rsitr.models import DEFAULT_PRETRAINED
from rsitr.models.pretrained import check_model_arguments
from rsitr.paths import regular_file

DEFAULT_BATCH_SIZE = 64
SPLIT_CHOICES = ("train", "val", "validation", "test")
PRETRAINED_HELP = ("rsitr tag (see `rsitr models`: shipped, or a hub tag such as remoteclip-vit-b-32, downloaded on "
                   "first use), OpenCLIP tag, OpenCLIP checkpoint, or `rsitr train` checkpoint or run folder")


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--precision`` (see :mod:`rsitr.models.precision`)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="encoders' numeric precision: fp32, or bf16 / fp16 autocast; auto (default): bf16 on "
                             "CUDA and on CPUs with native bf16, else fp32")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    parser.add_argument("--no-progress", dest="no_progress", action="store_true",
                        help="no progress bars")


def add_batch_size_argument(parser: argparse.ArgumentParser, what: str = "images") -> None:
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"{what} encoded per batch (default {DEFAULT_BATCH_SIZE})")


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="image loading processes (default 0: in the main process)")


def add_engine_arguments(parser: argparse.ArgumentParser, ray_does: str, local_cluster: str = "") -> None:
    """``--engine local|ray``, ``--address`` and ``--ray-actors``; ``ray_does`` says what the Ray engine does for this
    command, ``local_cluster`` how the default local cluster is sized."""
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help=f"local (default), or ray: {ray_does}")
    parser.add_argument("--address", default=None,
                        help="--engine ray: the cluster to join (e.g. 10.0.0.5:6379 or ray://head:10001); default a "
                             f"local cluster{local_cluster}")
    parser.add_argument("--ray-actors", type=positive_int, default=2,
                        help="--engine ray: model copies encoding at once (default 2)")


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device``, resolved by :func:`rsitr.runtime.resolve_device` (``default`` None: the config's device)."""
    where = "default auto" if default == "auto" else "default: the config's device; auto"
    parser.add_argument("--device", default=default, help=f"cpu, cuda, cuda:1 ... ({where}: cuda when available)")


def add_inference_arguments(parser: argparse.ArgumentParser, runtime: bool = False) -> None:
    """``--device``, ``--precision``, ``--threads`` and ``--runtime`` of commands that run a model (``runtime``
    False: a command that also trains, whose model runs on PyTorch)."""
    add_device_argument(parser)
    add_precision_argument(parser)
    add_threads_argument(parser)
    if runtime:
        parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                            help="where the encoders run: onnx (ONNX Runtime, fp32; exported once per weights into "
                                 "$RSITR_CACHE_DIR/onnx), torch (PyTorch), or auto (default): ONNX Runtime where it "
                                 "runs the model as asked (fp32 / auto precision), else PyTorch")


def add_orientations_argument(parser: argparse.ArgumentParser, default: int | None = 1, where: str = "") -> None:
    parser.add_argument("--orientations", type=int, choices=(1, 4, 8), default=default,
                        help="average each image's embedding over 1 (as given), 4 (its rotations) or 8 (rotations "
                             "and mirrors) orientations: aerial images have no up; costs that many image encodes"
                             f"{where} (default {default or 'as the index records it, 1 for a new one'})")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch and ONNX Runtime (default: their choice)")


def add_model_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model`` and ``--pretrained`` of commands that build a model (see :func:`model_arguments`)."""
    default = default or f"with neither flag, the shipped {DEFAULT_PRETRAINED}"
    parser.add_argument("--model", default=None,
                        help=f"OpenCLIP model name (default: the model of --pretrained; {default})")
    parser.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)


def model_arguments(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``(model name, pretrained)`` as given, for :func:`rsitr.models.create_model` (which loads the shipped default
    when both are None). Mistyped names are refused here, before any model is loaded (see
    :func:`check_model_arguments`)."""
    check_model_arguments(args.model, args.pretrained)
    return args.model, args.pretrained


def check_readable(*paths: tuple[str, str | None]) -> None:
    """Refuse ``(what, path)`` inputs that do not exist, cannot be read or are neither a folder nor a regular file
    (a FIFO, socket or device: :func:`rsitr.paths.regular_file`), before anything heavy is imported."""
    for what, path in paths:
        if path is None:
            continue
        if not os.path.exists(path):
            raise UserError(f"{what} {path} not found")
        if not os.path.isdir(path):
            regular_file(path, what)
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            raise UserError(f"{what} {path} cannot be read (permission denied)")
