"""Orientation averaging at index time (``rsitr index --orientations``): a chip and the same chip turned by 90 degrees
get one vector, a query image is encoded the same way, and the choice is recorded and fixed for the index."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rsitr.index import ArchiveIndex, BuildOptions
from rsitr.index.compatibility import IndexCompatibilityError
from support.index import noise, tiny_encoder


def _archive(root):
    root.mkdir()
    image = noise(7, 96, 96)
    image.save(root / "a.png")
    image.transpose(Image.Transpose.ROTATE_90).save(root / "a_turned.png")
    return root


def _vectors(index) -> list[np.ndarray]:
    """The chips' stored vectors by id: a.png's, then a_turned.png's (files are indexed in path order)."""
    return list(index.store.embeddings()[1])


@pytest.mark.parametrize("orientations", [1, 4])
def test_a_turned_chip_gets_the_same_vector_only_when_averaged(tmp_path, orientations):
    root = _archive(tmp_path / "archive")
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(orientations=orientations))
    try:
        assert index.settings.orientations == orientations
        first, turned = _vectors(index)
        cosine = float(first @ turned)
        if orientations == 4:  # the mean over the 4 rotations is the same set of embeddings, in another order
            assert cosine > 0.9999
            query = index.embed_image(Image.open(root / "a.png"))
            assert float(query @ first) > 0.9999
        else:  # the random tiny tower is not rotation-invariant: the check above can fail
            assert cosine < 0.999
    finally:
        index.close()


def test_the_orientations_are_fixed_for_the_life_of_an_index(tmp_path):
    root = _archive(tmp_path / "archive")
    index, _ = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                                  options=BuildOptions(orientations=4))
    index.close()
    with pytest.raises(IndexCompatibilityError, match="orientations=4"):
        ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False,
                           options=BuildOptions(orientations=1))
    again, report = ArchiveIndex.build(tmp_path / "index", root, encoder=tiny_encoder(), progress=False)
    assert again.settings.orientations == 4 and report.unchanged == 2
    again.close()
