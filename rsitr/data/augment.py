"""Orientation augmentation for aerial images: a random element of the dihedral group D4.

An aerial or satellite image has no canonical "up": a scene rotated by 90 degrees or mirrored is the same
scene, so remote-sensing retrieval trainings add random flips and 90-degree rotations. Each of the 8
orientations (4 rotations, each optionally mirrored) is drawn with equal probability. Captions that name
directions ("on the left of") are rare in RSICD/RSITMD/UCM, which is why the field accepts the noise.
"""

from __future__ import annotations

import random
from typing import Callable

from PIL import Image

ROTATIONS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def random_orientation(image: Image.Image, rng: random.Random | None = None) -> Image.Image:
    """``image`` in one of its 8 orientations, drawn uniformly (``rng`` defaults to the ``random`` module)."""
    draw = rng or random
    rotation = ROTATIONS[draw.randrange(4)]
    if rotation is not None:
        image = image.transpose(rotation)
    if draw.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def with_random_orientation(transform: Callable[[Image.Image], object]) -> Callable[[Image.Image], object]:
    """``transform`` applied after :func:`random_orientation` (before cropping, normalising ...)."""
    def apply(image: Image.Image) -> object:
        return transform(random_orientation(image))
    return apply
