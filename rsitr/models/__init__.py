"""Models: the OpenCLIP retrieval wrapper and the heads and adapters the methods add to it.

The names below are imported on first use (PEP 562), so that :mod:`rsitr.models.pretrained` (the shipped tags and
the default model) can be read by the command line without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TINY_MODEL", "ImageFeatures", "RetrievalCLIP", "TextFeatures", "create_retrieval_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("rsitr.models.clip"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
