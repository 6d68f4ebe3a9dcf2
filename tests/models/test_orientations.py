"""Test-time orientation averaging: the tensor orientations are the PIL ones, and an image's averaged embedding does
not depend on which way up it was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rsitr.data.augment import ORIENTATION_COUNTS, ORIENTATIONS, orient, orient_tensor
from rsitr.models.clip import ImageFeatures
from rsitr.inference.images import encode_oriented


def _as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


@pytest.mark.parametrize("view", range(ORIENTATIONS))
def test_a_batch_is_oriented_as_its_images_are(view):
    image = Image.fromarray(np.random.default_rng(view).integers(0, 255, (5, 5, 3), dtype=np.uint8))
    assert torch.equal(orient_tensor(_as_tensor(image)[None], view)[0], _as_tensor(orient(image, view)))


def _not_rotation_invariant(images: torch.Tensor) -> ImageFeatures:
    """A toy encoder whose embedding changes with the image's rotation: the pixel values along the first row."""
    return ImageFeatures(images[:, 0, 0, :].clone(), images.flatten(2).transpose(1, 2))


def test_the_averaged_embedding_is_the_same_whichever_way_up_and_one_view_is_the_encoder_itself():
    images = torch.randn(3, 3, 6, 6)
    plain = encode_oriented(_not_rotation_invariant, images)
    assert torch.equal(plain.global_, _not_rotation_invariant(images).global_)
    averaged = encode_oriented(_not_rotation_invariant, images, ORIENTATION_COUNTS[4])
    turned = encode_oriented(_not_rotation_invariant, orient_tensor(images, 2), ORIENTATION_COUNTS[4])
    torch.testing.assert_close(averaged.global_, turned.global_, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain.global_, _not_rotation_invariant(orient_tensor(images, 2)).global_)
    # local tokens stay those of the image as given (cells compared as they lie)
    assert torch.equal(averaged.tokens, plain.tokens)
