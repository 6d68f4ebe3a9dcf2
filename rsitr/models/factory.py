"""Build the retrieval model a run configures, and load it back from an ``rsitr train`` checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rsitr.config import ModelConfig
from rsitr.models.clip import create_retrieval_model

CHECKPOINT_FORMAT = "rsitr-checkpoint-v1"


def build_model(config: ModelConfig, device: str | torch.device = "cpu", seed: int | None = 0) -> nn.Module:
    """The OpenCLIP retrieval model, wrapped in CMER's Focus-Adapter when ``config.focus_adapter``.

    ``config.quick_gelu`` is set to the activation built, so a saved config rebuilds the same one without the tag.
    """
    model = create_retrieval_model(config.name, config.pretrained, device=device, seed=seed,
                                   quick_gelu=config.quick_gelu)
    config.quick_gelu = model.quick_gelu
    if config.focus_adapter:
        from rsitr.models.focus_adapter import FocusAdapterCLIP

        model = FocusAdapterCLIP(model, adapter_dim=config.adapter_dim).to(device)
    return model


def read_checkpoint(path: str | Path) -> dict | None:
    """An ``rsitr train`` checkpoint as a dict; None when ``path`` is no file or another kind (e.g. OpenCLIP's)."""
    if not Path(path).is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        return checkpoint
    return None


def load_model(name: str, pretrained: str | None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict | None]:
    """A model by OpenCLIP name + tag/checkpoint, or rebuilt from an ``rsitr train`` checkpoint.

    Returns the model and, for an rsitr checkpoint, the run config it was trained with (else None). The
    architecture (including a Focus-Adapter) then comes from the checkpoint, so ``name`` need not match,
    and the backbone is built without downloading anything.
    """
    checkpoint = read_checkpoint(pretrained) if pretrained else None
    if checkpoint is None:
        return create_retrieval_model(name, pretrained, device=device), None
    model = build_model(ModelConfig(**{**checkpoint["config"]["model"], "pretrained": None}), device)
    model.load_state_dict(checkpoint["model"])
    return model, checkpoint["config"]
