"""Text bound for a terminal, made safe: the one formatter every printed name (a file name, a path, a CRS, an error
message naming them) goes through.

A file name may hold ESC sequences (clear the screen, move the cursor, recolour), a newline that forges a result
line, a carriage return that overwrites one, bidirectional overrides that reorder what is shown, or bytes that are
no UTF-8 (Python keeps them as lone surrogates, which ``print`` cannot encode). :func:`printable` writes each such
character as its Python escape (``\\x1b``, ``\\n``, ``\\u202e``, ``\\udcff``), so the text shows what the name
holds and nothing acts on the terminal; ordinary letters of any script pass unchanged. A ``limit`` cuts what an
attacker could make huge (a 50 MB name) to a length a terminal shows.

:func:`in_flags` is the one place a library message's argument names (```max_pixels```) become the command line's
flags (``--max-pixels``): the CLI's error and warning lines, and the failures an index stored as text.
"""

from __future__ import annotations

import re
from typing import Collection

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""C0 and C1 controls, DEL, line and paragraph separators, bidirectional marks and overrides, lone surrogates."""

DEFAULT_LIMIT = 4000
"""Characters of one printed text kept by default (an error line naming a few long paths fits)."""


def printable(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``str(text)`` with every character of :data:`UNSAFE` escaped, cut to ``limit`` characters (None: whole)
    with a note of how many were left out."""
    text = str(text)
    cut = "" if limit is None or len(text) <= limit else f"... ({len(text) - limit:,} more characters)"
    text = text if not cut else text[:limit]
    return UNSAFE.sub(lambda match: match.group().encode("unicode_escape", "backslashreplace").decode("ascii"),
                      text) + cut


FLAG_OF_PARAMETER = {"k": "--top-k", "find_all": "--all", "output_dir": "--out", "model_name": "--model",
                     "images_root": "--images", "directory": "--out", "out_dir": "--out"}
"""Library parameters whose flag is not their name with ``--`` and hyphens (docs/ARCHITECTURE.md's Vocabulary;
``directory``: the index folder ``ArchiveIndex.build`` writes, ``rsitr index --out``; ``out_dir``: the shard folder
``embed_to_parquet`` writes, ``rsitr embed --out``)."""

_NAMED = re.compile(r"`(\w+)(?:=([^`]*))?`")


def in_flags(message: object, parameters: Collection[str] | None = None) -> str:
    """An error's or warning's text as the command line says it: each argument it names in backticks (one of its
    ``parameters``: :mod:`rsitr.errors`) becomes its flag, ```runtime='onnx'``` becomes ``--runtime onnx`` and
    ```strict=True``` ``--strict``. ``parameters`` given: the arguments a stored message (text, without the
    exception that had them) may name, such as an index's per-file failures."""
    if parameters is None:
        parameters = getattr(message, "parameters", ())

    def flag(match: re.Match) -> str:
        name, value = match.groups()
        if name not in parameters:
            return match.group(0)
        spelled = FLAG_OF_PARAMETER.get(name, "--" + name.replace("_", "-"))
        if value is None or value == "True":
            return spelled
        return f"{spelled} {value.strip(chr(39) + chr(34))}"

    return _NAMED.sub(flag, str(message))
