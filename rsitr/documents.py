"""The one bounded reader of the YAML and JSON documents users hand rsitr: config files, ``--set`` overrides,
``_manifest.json`` files (the API takes no JSON bodies: its uploads are forms, bounded by size in the middleware).

Python's parsers recurse per nesting level and build every alias: a config that is 5,000 brackets deep or a
self-referencing alias ends in a ``RecursionError``, a few lines of nested aliases expand to billions of nodes, and
a 50 MB value is read (and echoed in messages) whole. Here a document is refused in one :class:`DocumentError`
line, before it is built, when it is larger than its ``max_bytes``, is no UTF-8 text, nests deeper than
``max_depth`` or (YAML) uses aliases; what it must be at the top (a mapping) is checked by :func:`expect_mapping`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rsitr.errors import UserError
from rsitr.paths import regular_file

MAX_DEPTH = 32
"""Nesting a document may have (rsitr's configs have 3 levels, manifests 4)."""
MAX_BYTES = 1 << 20
"""Size of a config or manifest read by default (rsitr's are a few kB)."""


class DocumentError(UserError):
    """A config, override or manifest that is too large, too deep, not UTF-8, or not valid YAML / JSON."""


def read_text(path: str | Path, what: str, max_bytes: int = MAX_BYTES, kind: str = "") -> str:
    """The UTF-8 text of the regular file ``path`` (``what`` names it in messages, ``kind`` the text it should be:
    YAML, JSON), refused over ``max_bytes``."""
    size = regular_file(path, what).st_size
    if size > max_bytes:
        raise DocumentError(f"{what} {path} is {size:,} bytes, more than the {max_bytes:,} such a file may have")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DocumentError(f"{what} {path} is not a {kind + ' ' if kind else ''}text file (not UTF-8)") from None


def check_yaml(text: str, where: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse YAML ``text`` (``where``: what it is, for messages) that is not valid, uses aliases or nests deeper
    than ``max_depth``, from its event stream: nothing is built or expanded."""
    import yaml

    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise DocumentError(f"{where}: YAML aliases (*{str(event.anchor)[:40]}) are not read; write the "
                                    f"values out")
            depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
            if depth > max_depth:
                raise DocumentError(f"{where} is nested deeper than {max_depth} levels")
    except yaml.YAMLError as err:
        raise DocumentError(f"{where} is not a YAML file rsitr reads: {' '.join(str(err).split())[:300]}") from None


def loads_json(text: str | bytes, where: str, max_depth: int = MAX_DEPTH) -> object:
    """The JSON document ``text``, refused in one line when it is not valid JSON or nests deeper than
    ``max_depth`` (the parser's own recursion limit, about 1,000 levels, is caught first)."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise DocumentError(f"{where} is nested deeper than {max_depth} levels") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise DocumentError(f"{where} is not valid JSON ({str(err)[:120]})") from None
    if _depth(document, max_depth) > max_depth:
        raise DocumentError(f"{where} is nested deeper than {max_depth} levels")
    return document


def read_json(path: str | Path, what: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> object:
    """The JSON document in the file ``path`` (:func:`read_text`, :func:`loads_json`)."""
    return loads_json(read_text(path, what, max_bytes, "JSON"), f"{what} {path}", max_depth)


def expect_mapping(document: object, where: str) -> dict:
    """``document`` when it is a mapping (a config's sections, a manifest's fields), else one error line."""
    if not isinstance(document, dict):
        raise DocumentError(f"{where} is a {type(document).__name__} at the top, not a mapping of names to values")
    return document


def _depth(document: object, limit: int) -> int:
    """The nesting depth of parsed JSON (a scalar 0), counted no further than ``limit + 1``; iterative."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
