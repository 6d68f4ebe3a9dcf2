"""The ``rsitr`` command line: one subcommand per module in :mod:`rsitr.commands`.

Each command module has a docstring (its help text), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only to build the parser; heavy imports happen inside ``run``. A module's
``INTERRUPTED_HINT`` (text, or a function of the parsed arguments) is added to the line Ctrl-C ends with.

User errors (:class:`rsitr.errors.UserError`: a bad data file, config key, checkpoint ...), file-system
errors (``OSError``: a missing file, no permission, a full disk) and SQLite's errors of the same kinds (a full
disk, a read-only or locked index) end as one ``rsitr <command>: error: ...`` line and exit code 2, as argparse
does for bad flags; Ctrl-C ends with one line and exit code 130. ``--debug`` shows the traceback instead.
Warnings are shown as one ``rsitr <command>: warning: ...`` line each, without Python's source line.
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
import warnings
from importlib import metadata
from typing import Sequence

from rsitr import __version__
from rsitr.errors import UserError
from rsitr.models.pretrained import DEFAULT_PRETRAINED

COMMANDS = ("demo", "eval", "train", "reproduce", "data", "index", "search", "serve", "classify", "embed", "models")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
SQLITE_USER_ERRORS = {
    sqlite3.SQLITE_FULL: "free disk space and run the command again: what was written is kept",
    sqlite3.SQLITE_READONLY: "the index's files or folder are read-only: give write permission, or use a copy",
    sqlite3.SQLITE_PERM: "the index's files or folder are read-only: give write permission, or use a copy",
    sqlite3.SQLITE_CANTOPEN: "check the index folder exists and you may read (and write) it",
    sqlite3.SQLITE_BUSY: "another process (an `rsitr index` run?) holds the index: wait for it and run again",
    sqlite3.SQLITE_LOCKED: "another process (an `rsitr index` run?) holds the index: wait for it and run again",
    sqlite3.SQLITE_IOERR: "the disk failed to read or write: check it (and its free space) and run again",
}
"""SQLite's primary result codes that a user's situation causes, with the fix."""


def version_text() -> str:
    """rsitr's version, the torch and open_clip it runs on (read from the installed metadata: nothing is imported)
    and the default model."""
    def installed(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"rsitr {__version__} (torch {installed('torch')}, open_clip {installed('open_clip_torch')}; "
            f"default model {DEFAULT_PRETRAINED})")


class _VersionAction(argparse.Action):
    """``--version``: prints :func:`version_text` and exits (computed only when asked)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, default: str = argparse.SUPPRESS,
                 help: str | None = None) -> None:  # noqa: A002 - argparse's keyword
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsitr", description="Remote sensing image-text retrieval: train, evaluate, index and search.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of rsitr, torch and open_clip and the default model")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"rsitr.commands.{name}")
        doc = (module.__doc__ or "").strip()
        sub = subparsers.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the Python traceback of errors")
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, interrupted_hint=getattr(module, "INTERRUPTED_HINT", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"rsitr {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return int(args.run(args) or 0)
    except (UserError, OSError) as err:
        if args.debug:
            raise
        print(f"rsitr {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except sqlite3.Error as err:
        fix = SQLITE_USER_ERRORS.get(getattr(err, "sqlite_errorcode", -1) & 0xFF)
        if args.debug or fix is None:
            raise
        print(f"rsitr {args.command}: error: {err} ({fix})", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        hint = args.interrupted_hint(args) if callable(args.interrupted_hint) else args.interrupted_hint
        hint = f" {hint}" if hint else ""
        print(f"rsitr {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
