"""The one table of deprecated spellings: every old flag or parameter name that still works, the name that replaced
it and the release that removes it (as timm keeps one deprecation map instead of aliases scattered through callers).

The command line's parsers add each ``rsitr ...`` entry as a hidden alias of its replacement
(:func:`rsitr.commands.options.add_deprecated_flags`); library functions pass an old keyword through
:func:`renamed`. Either way the user sees one :class:`~rsitr.errors.RsitrWarning` naming the new spelling and the
removal release. docs/ARCHITECTURE.md's "Vocabulary" says why each new spelling is the one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TypeVar, cast

from rsitr.errors import RsitrWarning

T = TypeVar("T")

REMOVAL = "0.3.0"
"""The release that removes the spellings deprecated in 0.1.x (one release after they started warning)."""


@dataclass(frozen=True)
class Deprecation:
    """``old`` still means ``new`` in ``where`` until ``removal``.

    ``where`` is a command line (``"rsitr search"``: ``old`` and ``new`` are its flags, or ``new`` names a positional
    argument by its metavar), ``"rsitr"`` for every command that has the flag ``new``, or a library function
    (``"ArchiveIndex.open"``: ``old`` and ``new`` are keyword parameters)."""

    where: str
    old: str
    new: str
    removal: str = REMOVAL

    @property
    def message(self) -> str:
        new = f"the {self.new} argument" if self.new.isupper() else self.new  # a positional, by its metavar
        return f"{self.old} is deprecated: it is now {new} ({self.old} goes in rsitr {self.removal})"

    def applies_to(self, prog: str) -> bool:
        return self.where in (prog, "rsitr")


DEPRECATIONS: tuple[Deprecation, ...] = (
    # --out is the file or folder a command writes; --json is search's print format (--format json).
    Deprecation("rsitr classify", "--json", "--out"),
    Deprecation("rsitr data inspect", "--json", "--out"),
    Deprecation("rsitr train", "--output-dir", "--out"),
    # --checkpoint is where an index's recorded model file lies now; --pretrained names the weights to encode with.
    Deprecation("rsitr search", "--pretrained", "--checkpoint"),
    Deprecation("rsitr serve", "--pretrained", "--checkpoint"),
    # --images is the folder a caption file's image names are relative to; what index reads is its IMAGES argument.
    Deprecation("rsitr index", "--images", "IMAGES"),
    Deprecation("rsitr", "--quiet", "--no-progress"),
    Deprecation("ArchiveIndex.open", "pretrained", "checkpoint"),
    # image is the image itself (pixels, or the file holding them); an embedding is a vector.
    Deprecation("ArchiveIndex.search", "image", "vector"),
    Deprecation("ArchiveIndex.probe", "image", "vector"),
    Deprecation("ArchiveIndex.find_all", "image", "vector"),
    Deprecation("ArchiveIndex.scene_scores", "image", "vector"),
    Deprecation("create_app", "pretrained", "checkpoint"),
)

_warned: set[Deprecation] = set()


def deprecation(where: str, old: str) -> Deprecation:
    """The table's entry for ``old`` in ``where`` (a KeyError names a spelling the table does not hold: a bug)."""
    for entry in DEPRECATIONS:
        if entry.where == where and entry.old == old:
            return entry
    raise KeyError(f"{old} in {where} is not in rsitr.deprecations.DEPRECATIONS")


def warn(entry: Deprecation, stacklevel: int = 3) -> None:
    """Warn that ``entry.old`` was used (every time: the command line warns once per command line itself)."""
    warnings.warn(entry.message, RsitrWarning, stacklevel=stacklevel)


def renamed(where: str, old: str, old_value: object, new_value: T) -> T:
    """The value of a renamed keyword parameter: ``new_value``, or ``old_value`` given under the old name, which warns
    once per process (a server does not repeat it per request). Both given is a ``TypeError``, as Python's own for a
    repeated argument. The value has the new parameter's type (the old spelling takes what the new one takes)."""
    if old_value is None:
        return new_value
    entry = deprecation(where, old)
    if new_value is not None:
        raise TypeError(f"{where}() got both {entry.new} and its deprecated spelling {entry.old}")
    if entry not in _warned:
        _warned.add(entry)
        warn(entry, stacklevel=4)
    return cast(T, old_value)
