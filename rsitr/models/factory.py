"""Build the retrieval model a run configures, and load it back from an ``rsitr train`` checkpoint.

Every model the commands build comes through here, so the messages about weights are rsitr's and honest:
OpenCLIP's own "initialized randomly" log line is dropped, and :func:`create_model` says once per model
name, in rsitr's words, when weights really are random (no pretrained tag or file, and no checkpoint to
load afterwards). Checkpoints that do not fit end as one :class:`CheckpointError` line naming both
architectures instead of a state_dict dump.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from rsitr.config import ModelConfig
from rsitr.models.checkpoint import CheckpointError, read_checkpoint, read_state_dict
from rsitr.models.clip import create_retrieval_model, drop_root_log_lines
from rsitr.models.pretrained import DEFAULT_MODEL, packaged_config, packaged_tags

_warned_random: set[str] = set()


def warn_random_weights(name: str, pretrained_text: bool = False, pretrained_image: bool = False) -> None:
    """Say once per process and model name that ``name`` has random weights (only its image tower's, when its
    text tower is a pretrained Hugging Face encoder; only its projections', when both towers are pretrained)."""
    if name not in _warned_random:
        _warned_random.add(name)
        if pretrained_text and pretrained_image:
            which = f"{name}'s projection heads have randomly initialised weights (its towers are pretrained)"
        elif pretrained_text:
            which = f"{name}'s image tower has randomly initialised weights (its text tower is pretrained)"
        else:
            which = f"{name} has randomly initialised weights"
        print(f"rsitr: warning: {which}; no pretrained tag or checkpoint was given, so its embeddings mean "
              f"nothing until it is trained", file=sys.stderr)


def describe_weights(state: dict) -> str:
    """A one-line architecture summary of a CLIP state dict (OpenCLIP's or an rsitr model's, prefixed or not)."""
    def find(suffix: str):
        return next((v for k, v in state.items() if k.endswith(suffix) and hasattr(v, "shape")), None)

    conv, projection = find("visual.conv1.weight"), find("text_projection")
    layers = {k.split("visual.transformer.resblocks.")[1].split(".")[0] for k in state
              if "visual.transformer.resblocks." in k}
    parts = []
    if conv is not None:
        parts.append(f"ViT width {conv.shape[0]}, patch {conv.shape[-1]}, {len(layers)} layers")
    if projection is not None:
        parts.append(f"embedding dim {projection.shape[-1]}")
    return ", ".join(parts) or f"{len(state)} tensors of an unrecognised layout"


def describe_model(name: str) -> str:
    """The same summary as :func:`describe_weights`, from an OpenCLIP model config."""
    from rsitr._compat import open_clip

    config = open_clip.get_model_config(name) or {}
    vision = config.get("vision_cfg", {})
    patch = vision.get("patch_size")
    if not patch or not isinstance(vision.get("layers"), int):
        return name
    return f"{name}: ViT width {vision.get('width')}, patch {patch}, {vision['layers']} layers, " \
           f"embedding dim {config.get('embed_dim')}"


def create_model(name: str | None, pretrained: str | None, device: str | torch.device = "cpu", seed: int | None = 0,
                 weights_follow: bool = False, quick_gelu: bool | None = None) -> nn.Module:
    """:func:`create_retrieval_model` with rsitr's messages: a missing checkpoint file, or an OpenCLIP checkpoint
    of another architecture, is a :class:`CheckpointError`; random weights are announced unless
    ``weights_follow`` (a checkpoint is loaded into the model next)."""
    try:
        # OpenCLIP's random-init line is replaced by warn_random_weights's
        with drop_root_log_lines("initialized randomly", "initialized partially"):
            model = create_retrieval_model(name, pretrained, device=device, seed=seed, quick_gelu=quick_gelu)
    except Exception as err:  # noqa: BLE001 - torch and pickle raise many types for a file of the wrong kind
        if not (pretrained and Path(pretrained).is_file()):
            raise
        state = read_state_dict(pretrained)  # a CheckpointError when torch cannot read it at all
        if "state_dict" not in str(err):
            raise
        raise CheckpointError(f"{pretrained} holds weights of another architecture "
                              f"({describe_weights(state)}) than the model asked for "
                              f"({describe_model(name)}); pass the matching --model") from None
    if not pretrained and not weights_follow:
        warn_random_weights(name, model.hf_text is not None, model.image_pretrained)
    return model


def build_model(config: ModelConfig, device: str | torch.device = "cpu", seed: int | None = 0,
                weights_follow: bool = False) -> nn.Module:
    """The OpenCLIP retrieval model, wrapped in CMER's Focus-Adapter when ``config.focus_adapter``.

    ``config.pretrained`` may be an ``rsitr train`` checkpoint: the model starts from that run's weights (a
    warm restart; optimiser, schedule and training heads start anew), which must be of the same architecture.
    ``config.quick_gelu`` is set to the activation built, so a saved config rebuilds the same one without the tag.
    """
    run = read_checkpoint(config.pretrained) if config.pretrained else None
    quick_gelu = config.quick_gelu
    if run is not None:
        recorded = run["config"]["model"]
        if recorded["name"] != config.name:
            raise CheckpointError(f"{config.pretrained} holds a trained {recorded['name']}, not {config.name}; "
                                  f"set model.name to {recorded['name']} to start from it")
        quick_gelu = recorded.get("quick_gelu") if quick_gelu is None else quick_gelu
    model = create_model(config.name, None if run else config.pretrained, device=device, seed=seed,
                         weights_follow=True, quick_gelu=quick_gelu)  # warned below, once the config is valid
    config.quick_gelu = model.quick_gelu
    model.lock_text(config.text_unlocked_layers)
    model.lock_image(config.image_unlocked_layers)
    if not (config.pretrained or weights_follow):
        warn_random_weights(config.name, model.hf_text is not None, model.image_pretrained)
    if config.focus_adapter:
        from rsitr.models.focus_adapter import FocusAdapterCLIP

        model = FocusAdapterCLIP(model, adapter_dim=config.adapter_dim).to(device)
    if run is not None:
        load_state_checked(model, run["model"], config.pretrained, config.name)
    return model


def load_state_checked(model: nn.Module, state: dict, path: str | Path, name: str) -> None:
    """``model.load_state_dict(state)``, or one :class:`CheckpointError` line naming both architectures."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{path} holds weights of another architecture ({describe_weights(state)}) than "
                              f"{name} ({describe_weights(model.state_dict())})") from None


def load_model(name: str | None, pretrained: str | None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict | None]:
    """A model by OpenCLIP name + tag/checkpoint, or rebuilt from an ``rsitr train`` checkpoint.

    Returns the model and, for an rsitr checkpoint or a packaged tag, the run config it was trained with (else
    None), so that it is scored as it was trained (local score on or off, fusion weights). The
    architecture (including a Focus-Adapter) then comes from the checkpoint and the backbone is built
    without downloading anything; a ``name`` that contradicts the checkpoint is an error naming both.
    ``name`` None means the checkpoint's model, or ``DEFAULT_MODEL``.
    """
    checkpoint = read_checkpoint(pretrained) if pretrained else None
    if checkpoint is None:
        if name is None and (pretrained or "") not in packaged_tags():  # a packaged tag names its own model
            name = DEFAULT_MODEL
        return create_model(name, pretrained, device=device), packaged_config(pretrained)
    recorded = checkpoint["config"]["model"]
    if name is not None and name != recorded["name"]:
        raise CheckpointError(f"--model {name} contradicts checkpoint {pretrained}, which holds a trained "
                              f"{recorded['name']}; leave out --model or pass --model {recorded['name']}")
    model = build_model(ModelConfig(**{**recorded, "pretrained": None}), device, weights_follow=True)
    load_state_checked(model, checkpoint["model"], pretrained, recorded["name"])
    return model, checkpoint["config"]
