"""Names a package exports, imported on first use (PEP 562): reading a light module of the package (the index
store's file names, a caption file) then imports no torch, FAISS or model."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, homes: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package`` exporting each module's names of ``homes`` (module -> names)."""
    module_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        if name in module_of:
            return getattr(importlib.import_module(module_of[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(module_of), __getattr__
