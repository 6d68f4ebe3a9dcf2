"""The one image loop (rsitr/inference/images.py) and the one orientation step (views.py): eval's corpus encoding,
embed's and classify's file encoding and the index's chip encoder give the same vectors for the same images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rsitr.data import CaptionCorpus, ImageRecord
from rsitr.data.augment import ORIENTATION_COUNTS
from rsitr.evaluate.runner import encode_corpus
from rsitr.inference.encoder import Encoder
from rsitr.inference.images import encode_image_files
from rsitr.models import TINY_MODEL, create_model
from support.index import noise

TOLERANCE = 1e-4
"""Cosine gap allowed between two paths over the same fp32 model (float noise of batching, not a model change)."""


@pytest.fixture(scope="module")
def loaded():
    return create_model(TINY_MODEL, seed=0)


@pytest.fixture
def images(tmp_path):
    paths = []
    for seed in range(5):
        path = tmp_path / f"scene{seed}.png"
        noise(seed, 96, 96).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("orientations", [1, 4])
def test_eval_and_the_index_encode_an_image_alike(loaded, images, orientations):
    corpus = CaptionCorpus("five", [ImageRecord(path, ("a caption",), "test", None, "five") for path in images])
    evaluated = encode_corpus(loaded.model, corpus, batch_size=2, progress=False,
                              image_views=ORIENTATION_COUNTS[orientations])
    indexed = Encoder(loaded, precision="fp32").encode_images([Image.open(path).convert("RGB") for path in images],
                                                              orientations)
    cosine = (F.normalize(evaluated.image.global_, dim=-1) * torch.from_numpy(indexed.embeddings)).sum(dim=1)
    assert cosine.min().item() > 1 - TOLERANCE
    tokens = F.normalize(evaluated.image.tokens, dim=-1)
    assert np.allclose(tokens.numpy(), indexed.tokens, atol=TOLERANCE)


def test_file_encoding_skips_unreadable_files_and_matches_eval(loaded, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [images[0], broken, *images[1:]]
    encoded = encode_image_files(loaded.model, paths, batch_size=2, progress=False)
    assert encoded.indices.tolist() == [0, 2, 3, 4, 5] and list(encoded.skipped) == [1]
    assert encoded.tokens is None  # embed and classify keep no patch tokens
    corpus = CaptionCorpus("five", [ImageRecord(path, ("a caption",), "test", None, "five") for path in images])
    evaluated = encode_corpus(loaded.model, corpus, batch_size=3, progress=False)
    assert torch.allclose(encoded.embeddings, evaluated.image.global_, atol=TOLERANCE)
