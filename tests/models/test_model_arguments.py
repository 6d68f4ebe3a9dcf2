"""create_model says what it builds: explicit keywords (model, pretrained, checkpoint) beside the one-argument
convenience, whose guess resolve_model names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsitr.models import DEFAULT_PRETRAINED, TINY_MODEL, create_model
from rsitr.models.checkpoint import CheckpointError
from rsitr.models.factory import ModelSource, resolve_model


def test_resolve_model_names_what_one_argument_is_taken_for(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"")
    assert resolve_model(DEFAULT_PRETRAINED) == ModelSource("tag", DEFAULT_PRETRAINED)
    assert resolve_model(tmp_path) == ModelSource("run", str(tmp_path))
    assert resolve_model(tmp_path / "weights.pt") == ModelSource("checkpoint", str(tmp_path / "weights.pt"))
    assert resolve_model(TINY_MODEL) == ModelSource("name", TINY_MODEL)


def test_checkpoint_is_never_taken_for_a_tag_or_a_name(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model(checkpoint=DEFAULT_PRETRAINED)  # a tag's name, not a file here
    with pytest.raises(TypeError, match="pretrained or checkpoint"):
        create_model(pretrained=DEFAULT_PRETRAINED, checkpoint=tmp_path)


def test_the_checkpoint_keyword_loads_what_the_one_argument_form_loads(tmp_path: Path) -> None:
    """An OpenCLIP-style weights file of the tiny model: the same weights by either spelling."""
    model = create_model(model=TINY_MODEL, seed=3, weights_follow=True).model
    path = tmp_path / "tiny.pt"
    torch.save(model.clip.state_dict(), path)
    explicit = create_model(TINY_MODEL, checkpoint=path).model
    convenient = create_model(TINY_MODEL, path).model
    for (name, a), (_, b) in zip(explicit.state_dict().items(), convenient.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(explicit.state_dict()[next(iter(explicit.state_dict()))],
                       model.state_dict()[next(iter(model.state_dict()))])
