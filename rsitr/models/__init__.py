"""Models: the registry of what can be built (:mod:`rsitr.models.registry`), :func:`create_model`, the one way to
build or load a model with its scoring recipe, the OpenCLIP retrieval wrapper, and the heads and adapters the
methods add to it.

The registry's names are plain imports (they import no torch, so the command line lists and checks models without
it); the others are imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from rsitr.models.registry import (DEFAULT_PRETRAINED, TINY_MODEL, PretrainedCfg, ScoringRecipe, get_pretrained_cfg,
                                   list_models, list_pretrained)

_LAZY = {"create_model": "rsitr.models.factory", "LoadedModel": "rsitr.models.factory",
         "ModelSource": "rsitr.models.factory", "resolve_model": "rsitr.models.factory",
         "ImageFeatures": "rsitr.models.clip", "RetrievalCLIP": "rsitr.models.clip", "TextFeatures": "rsitr.models.clip"}

__all__ = ["DEFAULT_PRETRAINED", "TINY_MODEL", "PretrainedCfg", "ScoringRecipe", "get_pretrained_cfg", "list_models",
           "list_pretrained", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
