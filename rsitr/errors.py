"""The one base class of the errors a user can fix (a bad file, flag, checkpoint or config key), and the one
category of what rsitr warns about.

The command line turns a :class:`UserError` into one ``rsitr <command>: error: <message>`` line on stderr
and exit code 2, like argparse does for a bad flag; anything else is a bug and keeps its traceback.
Library callers catch it (or its ``ValueError`` base) as usual.

Warnings go out one way: ``warnings.warn(message, RsitrWarning)``. The command line shows each as one
``rsitr <command>: warning: <message>`` line; a library caller filters them with the standard filters, e.g.
``warnings.simplefilter("error", RsitrWarning)`` to have them raised, or ``"ignore"`` to silence them.
Progress (bars, "indexed N files") is no warning: commands print it.

Errors and warnings speak the library's terms: a message names an argument in backticks, as Python code spells it
(```threads` must be at least 1``, ```runtime='onnx'`: ...``), and lists those arguments in ``parameters``. The
command line rewrites each listed one into its flag (``--threads``, ``--runtime onnx``) in one place
(:func:`rsitr.terminal.in_flags`), so no library message names a flag.
"""

from __future__ import annotations


class UserError(ValueError):
    """An input the user can fix; the message names what is wrong and the fix.

    ``parameters``: the arguments the message names (in backticks), for a front end to spell its own way."""

    parameters: tuple[str, ...] = ()

    def __init__(self, *args: object, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        if parameters:
            self.parameters = parameters


class MissingExtraError(UserError):
    """An optional dependency (an ``rsitr[...]`` extra) that a requested feature needs is not installed."""


class RsitrWarning(UserWarning):
    """Something the user may want to fix that did not stop the work (a dropped caption, a skipped file, a damaged
    derived file rebuilt in memory, a model with random weights); the message names it and the fix (``parameters``
    as for :class:`UserError`)."""

    parameters: tuple[str, ...] = ()

    def __init__(self, *args: object, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        if parameters:
            self.parameters = parameters
