"""The one base class of the errors a user can fix (a bad file, flag, checkpoint or config key).

The command line turns a :class:`UserError` into one ``rsitr <command>: error: <message>`` line on stderr
and exit code 2, like argparse does for a bad flag; anything else is a bug and keeps its traceback.
Library callers catch it (or its ``ValueError`` base) as usual.
"""

from __future__ import annotations


class UserError(ValueError):
    """An input the user can fix; the message names what is wrong and the fix."""
