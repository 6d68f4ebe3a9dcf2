"""The ``rsitr`` command line: one subcommand per module in :mod:`rsitr.commands`.

Each command module has a docstring (its help text), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only to build the parser; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMANDS = ("demo", "eval", "train", "index", "search", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsitr", description="Remote sensing image-text retrieval: train, evaluate, index and search.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"rsitr.commands.{name}")
        doc = (module.__doc__ or "").strip()
        sub = subparsers.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
