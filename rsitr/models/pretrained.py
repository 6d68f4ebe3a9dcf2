"""Checking the model a user names (``--model`` / ``--pretrained``) against what exists, before torch is imported.

A ``pretrained`` value is a tag of rsitr's registry (:mod:`rsitr.models.registry`: shipped, or on the Hugging Face
hub), an OpenCLIP tag (downloaded by OpenCLIP), an OpenCLIP checkpoint file, or an ``rsitr train`` checkpoint or run
folder. Registry tags, files and rsitr's own model configs are checked without importing torch, so the command line
refuses a mistyped name, or a hub tag that is neither cached nor reachable, at once; building the model is :func:`rsitr.models.create_model`'s. A shipped file of a model trained with pretrained
towers leaves out the towers' tensors that training left unchanged (:data:`PRETRAINED_PREFIXES`): their packages
provide them. Shipping a trained run as a tag is :mod:`rsitr.models.packaging`'s.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from rsitr.errors import UserError
from rsitr.models.checkpoint import CHECKPOINT_SUFFIXES, CheckpointError, check_exists, run_checkpoint
from rsitr.models.registry import (OPENCLIP_TAG_MODEL, RETIRED_TAGS, RSITR_TAG_PREFIX, PretrainedCfg,
                                   describe_shipped, get_pretrained_cfg, is_pretrained_tag, list_pretrained,
                                   register_model_configs, rsitr_model_configs)


def shipped_weights(model_name: str | None, tag: str) -> PretrainedCfg:
    """The entry of registry ``tag``, refused when ``model_name`` names another architecture (its weights fit only
    its own). Its file is checked by :meth:`PretrainedCfg.check_file` (a hub tag's fetched) when the model is built."""
    entry = get_pretrained_cfg(tag)
    if model_name not in (None, entry.architecture):
        raise UserError(f"pretrained tag {tag!r} is a {entry.architecture!r} model, not {model_name!r}; "
                        f"pass `model='{entry.architecture}'` or leave `model` out", parameters=("model",))
    return entry


def check_model_arguments(model_name: str | None, pretrained: str | None) -> None:
    """Refuse, as a :class:`UserError` naming the closest known names, a ``pretrained`` value that is no shipped tag,
    no file and no OpenCLIP tag of the model, a checkpoint path that does not exist, or an unknown model name.

    Shipped tags, files and rsitr's own model configs are checked without importing torch; only a value that may
    be an OpenCLIP tag or model name imports open_clip to look it up.
    """
    if is_pretrained_tag(pretrained):
        shipped_weights(model_name, pretrained).check_available()
        return
    if pretrained in RETIRED_TAGS:
        get_pretrained_cfg(pretrained)  # refuses it, saying how to train it again
    pretrained = run_checkpoint(pretrained)
    check_exists(pretrained)
    tag = None if not pretrained or Path(pretrained).is_file() else pretrained
    if tag is not None and not tag.startswith("hf-hub:"):
        if Path(tag).suffix in CHECKPOINT_SUFFIXES or "/" in tag or "\\" in tag:
            raise CheckpointError.missing(tag)
        near = difflib.get_close_matches(tag, list_pretrained() + list_pretrained(hub=True), n=3, cutoff=0.8)
        if near:
            raise UserError(f"unknown pretrained tag {tag!r}; did you mean {_names(near)}? "
                            f"(`rsitr models` lists every tag)")
        if tag.startswith(RSITR_TAG_PREFIX):  # rsitr's names: no OpenCLIP tag to look up (nor torch to import)
            get_pretrained_cfg(tag)  # refuses it, naming the shipped tags
    if tag is None and (model_name is None or model_name in rsitr_model_configs()):
        return
    _check_open_clip_names(model_name, tag)


def _check_open_clip_names(model_name: str | None, tag: str | None) -> None:
    open_clip = register_model_configs()
    models = open_clip.list_models()
    if model_name is not None and model_name not in models:
        raise UserError(f"unknown model {model_name!r}; closest: "
                        f"{_names(difflib.get_close_matches(model_name, models, n=5))} "
                        f"(`rsitr models` lists every architecture)")
    if tag is None or tag.startswith("hf-hub:"):
        return
    tags = open_clip.list_pretrained_tags_by_model(model_name or OPENCLIP_TAG_MODEL)
    if tag in tags:
        return
    if model_name is not None:
        raise UserError(f"unknown pretrained tag {tag!r} for model {model_name!r}; closest: "
                        f"{_names(difflib.get_close_matches(tag, tags, n=5, cutoff=0.4))} "
                        f"(`rsitr models` lists every tag)")
    known = sorted({known for _, known in open_clip.list_pretrained()})
    near = difflib.get_close_matches(tag, known, n=3, cutoff=0.6)
    raise UserError(f"unknown pretrained tag {tag!r}; rsitr ships {describe_shipped()}"
                    f"{f'; closest OpenCLIP tags: {_names(near)} (each with its `model`)' if near else ''} "
                    f"(`rsitr models` lists every tag)", parameters=("model",))


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


FROZEN_TEXT_PREFIX = "text.transformer."
"""Keys of a Hugging Face text tower's own weights in an OpenCLIP ``CustomTextCLIP`` state dict."""
FROZEN_IMAGE_PREFIX = "visual.trunk."
"""Keys of a timm image tower's own weights (without its projection head) in an OpenCLIP state dict."""
PRETRAINED_PREFIXES = (FROZEN_TEXT_PREFIX, FROZEN_IMAGE_PREFIX)
"""The towers whose unchanged tensors a shipped file leaves out (their packages provide them)."""
