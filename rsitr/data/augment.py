"""Orientation augmentation for aerial images: a random element of the dihedral group D4.

An aerial or satellite image has no canonical "up": a scene rotated by 90 degrees or mirrored is the same
scene, so remote-sensing retrieval trainings add random flips and 90-degree rotations. Each of the 8
orientations (4 rotations, each optionally mirrored) is drawn with equal probability. Captions that name
directions ("on the left of") are rare in RSICD/RSITMD/UCM, which is why the field accepts the noise.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable

from PIL import Image

from rsitr.errors import UserError

if TYPE_CHECKING:  # the index's torch-free search path imports this module
    import torch

ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
ORIENTATIONS = 8
"""Orientation ``v`` is rotation ``ROTATIONS[v // 2]``, mirrored when ``v`` is odd; 0 is the image as it is."""
ORIENTATION_COUNTS = {1: (0,), 4: (0, 2, 4, 6), 8: tuple(range(ORIENTATIONS))}
"""How many orientations an image is encoded in (test-time averaging) -> which: as given, its 4 rotations, or
rotations and mirrors."""


def orientation_views(count: int, error: type[UserError] = UserError) -> tuple[int, ...]:
    """The orientations an image is encoded in to average over ``count`` of them (:data:`ORIENTATION_COUNTS`);
    ``error`` (the caller's kind of :class:`~rsitr.errors.UserError`) naming `orientations` for another count."""
    if count not in ORIENTATION_COUNTS:
        raise error(f"`orientations` is one of {', '.join(map(str, ORIENTATION_COUNTS))}, got {count}",
                    parameters=("orientations",))
    return ORIENTATION_COUNTS[count]


def orient(image: Image.Image, view: int) -> Image.Image:
    """``image`` in orientation ``view`` (0-7, see :data:`ORIENTATIONS`)."""
    rotation = ROTATIONS[view // 2]
    if rotation is not None:
        image = image.transpose(rotation)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if view % 2 else image


def orient_tensor(images: torch.Tensor, view: int) -> torch.Tensor:
    """``images`` (``[..., H, W]``, square) in orientation ``view``: the same element of the group as :func:`orient`,
    on a preprocessed batch (a square resize and centre crop commute with it)."""
    rotated = images.rot90(view // 2, dims=(-2, -1))
    return rotated.flip(-1) if view % 2 else rotated


def random_orientation(image: Image.Image, rng: random.Random | None = None) -> Image.Image:
    """``image`` in one of its 8 orientations, drawn uniformly (``rng`` defaults to the ``random`` module)."""
    draw = rng or random
    rotation = draw.randrange(4)
    return orient(image, 2 * rotation + (draw.random() < 0.5))


def with_random_orientation(transform: Callable[[Image.Image], object]) -> Callable[[Image.Image], object]:
    """``transform`` applied after :func:`random_orientation` (before cropping, normalising ...)."""
    def apply(image: Image.Image) -> object:
        return transform(random_orientation(image))
    return apply
