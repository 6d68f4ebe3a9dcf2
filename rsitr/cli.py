"""The ``rsitr`` command line: one subcommand per module in :mod:`rsitr.commands`.

Each command module has a docstring (its help text), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only to build the parser; heavy imports happen inside ``run``. A module's
``INTERRUPTED_HINT`` (text, or a function of the parsed arguments) is added to the line Ctrl-C ends with.

User errors (:class:`rsitr.errors.UserError`: a bad data file, config key, checkpoint ...), file-system
errors (``OSError``: a missing file, no permission, a full disk) and SQLite's errors of the same kinds (a full
disk, a read-only or locked index) end as one ``rsitr <command>: error: ...`` line and exit code 2, as argparse
does for bad flags; Ctrl-C ends with one line and exit code 130. ``--debug`` shows the traceback instead.
Warnings (``warnings.warn(..., RsitrWarning)``: the one channel, see :mod:`rsitr.errors`) are shown as one
``rsitr <command>: warning: ...`` line each, without Python's source line; the libraries' own warnings and log
lines only with ``--verbose``. A mistyped command, choice or flag is refused by
the parser of the command it belongs to, with the closest known name. A module docstring's last block,
``Examples...``, ends the command's ``--help``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import sqlite3
import sys
import warnings
from importlib import metadata
from typing import Callable, Iterator, Mapping, NoReturn, Sequence, TextIO

from rsitr import __version__, deprecations
from rsitr.deprecations import Deprecation
from rsitr.errors import RsitrWarning, UserError
from rsitr.models import DEFAULT_PRETRAINED
from rsitr.terminal import in_flags, printable

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


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with a did-you-mean for a mistyped choice (a subcommand, ``--format tabel``) or flag.

    Python 3.14's ``suggest_on_error`` does the first; rsitr supports older Pythons. The flags of the command line
    being parsed are kept (``typed``) so that an error of this parser can name the known flag closest to one it
    does not know, also when the typo left a required flag missing (``--image`` for ``--images``)."""

    typed: Sequence[str] = ()
    elsewhere: Mapping[str, Sequence[str]] = {}
    """The shown flags of the other commands, with the commands that take them (a flag given to the wrong one)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--top 3` is no flag: a prefix would become --top-k silently
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            near = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}; {hint}(choose from "
                                                 f"{', '.join(choices)})")

    def error(self, message: str) -> NoReturn:
        if any(isinstance(action, argparse._SubParsersAction) for action in self._actions):
            super().error(message)  # the flags after a command are its own: no hint from this parser's
        known = [flag for action in self._actions for flag in action.option_strings]
        flags = {token.split("=", 1)[0] for token in self.typed if token.startswith("--")}
        hints = []
        for flag in sorted(flags - set(known)):
            if flag in self.elsewhere:
                hints.append(f"{flag} is a flag of {', '.join(self.elsewhere[flag])}, not of {self.prog}")
            elif near := difflib.get_close_matches(flag, known, n=1):
                hints.append(f"{flag}: did you mean {near[0]}?")
        super().error("; ".join([message, *hints]))


class _OldSpelling(argparse.Action):
    """A deprecated flag (:data:`rsitr.deprecations.DEPRECATIONS`) that still works as its replacement (``target``),
    hidden from ``--help``; using it warns once per command line (:class:`~rsitr.errors.RsitrWarning`: one
    deprecation line)."""

    def __init__(self, option_strings: list[str], dest: str, target: argparse.Action, entry: Deprecation,
                 **kwargs) -> None:
        nargs = None if not target.option_strings and target.nargs == "?" else target.nargs  # a positional's value
        super().__init__(option_strings, dest, nargs=nargs, const=target.const, default=argparse.SUPPRESS,
                         type=target.type, choices=target.choices, metavar=target.metavar, help=argparse.SUPPRESS)
        self.target, self.entry, self.warned = target, entry, False

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if not self.warned:
            self.warned = True
            deprecations.warn(self.entry)
        self.target(parser, namespace, values, option_string)


def add_deprecated_flags(parser: argparse.ArgumentParser) -> None:
    """Add the table's old flags of ``parser``'s command (its ``prog``, e.g. ``rsitr data inspect``), and of the
    commands below it, as hidden aliases of their replacements: the one place the command line learns them."""
    for entry in deprecations.DEPRECATIONS:
        if not entry.old.startswith("--") or not entry.applies_to(parser.prog):
            continue
        target = next((action for action in parser._actions
                       if entry.new in action.option_strings or (not action.option_strings and
                                                                 action.metavar == entry.new)), None)
        if target is not None:
            parser.add_argument(entry.old, action=_OldSpelling, dest=target.dest, target=target, entry=entry)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_deprecated_flags(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rsitr", description="Remote sensing image-text retrieval: train, evaluate, index and search.",
        epilog="`rsitr COMMAND --help` describes a command and ends with examples that run in a checkout.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of rsitr, torch and open_clip and the default model")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of errors")
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' own warnings and log lines (Ray, LanceDB, transformers, OpenCLIP, "
                             "uvicorn), which a normal run keeps off the terminal")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"rsitr.commands.{name}")
        doc = (module.__doc__ or "").strip()
        description, examples = doc.split("\n\nExamples", 1) if "\n\nExamples" in doc else (doc, None)
        sub = subparsers.add_parser(name, help=summary(doc), description=description,
                                    epilog=f"Examples{examples}" if examples else None,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the Python traceback of errors")
        sub.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show the libraries' own warnings and log lines")
        module.add_arguments(sub)
        add_deprecated_flags(sub)
        sub.set_defaults(run=module.run, interrupted_hint=getattr(module, "INTERRUPTED_HINT", None))
    owners: dict[str, list[str]] = {}
    for name, sub in subparsers.choices.items():
        for flag in {flag for action in sub._actions if action.help != argparse.SUPPRESS
                     for flag in action.option_strings}:
            owners.setdefault(flag, []).append(f"rsitr {name}")
    for name, sub in subparsers.choices.items():
        sub.elsewhere = {flag: commands for flag, commands in owners.items() if f"rsitr {name}" not in commands}
    return parser


def summary(doc: str) -> str | None:
    """A command docstring's first sentence, for the list of commands (its first line may end mid-sentence)."""
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    return paragraph.split(". ", 1)[0].rstrip(".") if paragraph else None


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; an unknown flag is refused by its command's parser (``rsitr search: error:``),
    with the closest known flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.typed = argv
    parser = build_parser()
    with warnings.catch_warnings(record=True) as said:  # shown below, once the command is known
        warnings.simplefilter("always", RsitrWarning)
        args, unknown = parser.parse_known_args(argv)
    show = warning_lines(args.command, getattr(args, "verbose", False))
    for warning in said:
        show(warning.message, warning.category, warning.filename, warning.lineno)
    if unknown:
        while True:  # down to the (sub)command that was given: `rsitr data inspect`
            nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
            if not nested:
                break
            parser = nested[0].choices[getattr(args, nested[0].dest)]
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


LIBRARY_LOGGERS = ("ray", "lancedb", "transformers", "open_clip", "timm", "urllib3", "huggingface_hub", "uvicorn",
                   "filelock", "fsspec")
"""Loggers of the libraries rsitr runs, kept at CRITICAL unless ``--verbose`` (OpenCLIP logs through the root one)."""


QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", "LANCEDB_LOG": "error"}
"""Variables the libraries read at import to stay quiet (where the user has not set them)."""


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Keep the libraries' log lines and advisory chatter off a normal run's terminal (``--verbose`` keeps them);
    what is changed is put back afterwards, for a caller of :func:`main` in its own process."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]
    levels = [logger.level for logger in loggers]
    added = {key: value for key, value in QUIET_ENVIRONMENT.items() if key not in os.environ}
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    os.environ.update(added)
    try:
        with native_stderr_quiet():
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """What native code writes to file descriptor 2 (a Rust panic of LanceDB on a damaged table, Ray's C++ core
    and worker processes, GDAL) goes to the null device, while Python's ``sys.stderr`` (rsitr's error and warning
    lines, progress bars) still reaches the terminal through a copy of the descriptor. Only where ``sys.stderr`` is
    descriptor 2 itself (a caller that captured it keeps what it set up)."""
    try:
        captured = sys.stderr.fileno() != 2
    except (AttributeError, OSError, ValueError):  # a StringIO or pytest's capture: not the process's stderr
        captured = True
    if captured:
        yield
        return
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    terminal = os.fdopen(terminal_fd, "w", buffering=1, encoding=sys.stderr.encoding, errors=sys.stderr.errors)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    python_stderr, sys.stderr = sys.stderr, terminal
    try:
        yield
    finally:
        terminal.flush()
        os.dup2(terminal_fd, 2)
        sys.stderr = python_stderr
        terminal.close()


def warning_lines(command: str, verbose: bool) -> Callable[..., None]:
    """A ``warnings.showwarning`` that writes rsitr's warnings (:class:`rsitr.errors.RsitrWarning`) as one
    ``rsitr <command>: warning: ...`` line each, without Python's source line; the libraries' only with ``verbose``."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None,
             line: str | None = None) -> None:
        if verbose or issubclass(category, RsitrWarning):
            print(f"rsitr {command}: warning: {printable(in_flags(message))}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    args.verbose = getattr(args, "verbose", False)
    try:
        with warnings.catch_warnings(), quiet_libraries(args.verbose):
            warnings.showwarning = warning_lines(args.command, args.verbose)
            return int(args.run(args) or 0)
    except (UserError, OSError) as err:
        if args.debug:
            raise
        print(f"rsitr {args.command}: error: {printable(in_flags(err))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except sqlite3.Error as err:
        fix = SQLITE_USER_ERRORS.get(getattr(err, "sqlite_errorcode", -1) & 0xFF)
        if args.debug or fix is None:
            raise
        print(f"rsitr {args.command}: error: {printable(err)} ({fix})", file=sys.stderr)
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
