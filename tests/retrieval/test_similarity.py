import math

import pytest
import torch
import torch.nn.functional as F

from rsitr import similarity
from rsitr.similarity import fuse, global_similarity, local_similarity


def naive_local(image_tokens, text_tokens, text_mask):
    out = torch.zeros(image_tokens.shape[0], text_tokens.shape[0])
    for i in range(image_tokens.shape[0]):
        for j in range(text_tokens.shape[0]):
            words = F.normalize(text_tokens[j][text_mask[j]], dim=-1)
            cosines = F.normalize(image_tokens[i], dim=-1) @ words.T  # [P, L_j]
            over_words = cosines.norm(dim=1)  # L2 over words, one value per patch
            out[i, j] = over_words.norm()  # then L2 over patches
    return out


@pytest.fixture
def tokens():
    torch.manual_seed(0)
    image = torch.randn(5, 7, 16)
    text = torch.randn(6, 9, 16)
    mask = torch.zeros(6, 9, dtype=torch.bool)
    for j, length in enumerate([9, 3, 5, 1, 8, 2]):
        mask[j, :length] = True
    text[~mask] = 1e3  # garbage in the padding must not leak into the result
    return image, text, mask


def test_local_similarity_matches_naive_loop_and_ignores_padding(tokens):
    image, text, mask = tokens
    expected = naive_local(image, text, mask)
    torch.testing.assert_close(local_similarity(image, text, mask), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_bytes", [1, 16 * 16 * 4 * 2 * 2, 2**30])
def test_local_similarity_is_independent_of_chunking(tokens, chunk_bytes):
    image, text, mask = tokens
    torch.testing.assert_close(local_similarity(image, text, mask, max_chunk_bytes=chunk_bytes),
                               naive_local(image, text, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", [similarity._squared_by_gram, similarity._squared_direct])
def test_both_local_computations_match_the_naive_loop(path):
    """D = 150 spans two full Gram row blocks and a partial one (GRAM_BLOCK = 64)."""
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(4, 6, 150, generator=generator), torch.randn(5, 7, 150, generator=generator)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [1], [4], [2], [6]])
    expected = naive_local(image, text, mask)
    for chunk_bytes in (1, 2**30):
        torch.testing.assert_close(path(image, text, mask, chunk_bytes).sqrt(), expected, atol=1e-5, rtol=1e-5)


def test_local_similarity_hand_computed():
    # One image with two orthogonal patches, one text with the word equal to the first patch:
    # cosines [[1], [0]] -> norms over words [1, 0] -> norm over patches 1.
    image = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    text = torch.tensor([[[3.0, 0.0], [5.0, 5.0]]])
    assert local_similarity(image, text, torch.tensor([[True, False]])).item() == pytest.approx(1.0, abs=1e-5)
    # With the second word (cos 1/sqrt2 to both patches): sqrt(1 + 1/2 + 0 + 1/2) = sqrt(2).
    both = local_similarity(image, text, torch.tensor([[True, True]])).item()
    assert both == pytest.approx(math.sqrt(2), abs=1e-5)


def test_local_similarity_honours_any_mask_pattern(tokens):
    image, text, mask = tokens
    mask = mask.clone()
    mask[1, 0] = False  # a hole before real tokens
    mask[:, -1] = False  # a column that is padding everywhere
    torch.testing.assert_close(local_similarity(image, text, mask), naive_local(image, text, mask), atol=1e-5, rtol=1e-5)


def test_local_similarity_is_differentiable(tokens):
    image, text, mask = tokens
    image = image.clone().requires_grad_()
    local_similarity(image, text, mask).sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


def test_global_similarity_is_cosine():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])
    torch.testing.assert_close(global_similarity(a, b), torch.tensor([[0.8], [0.0]]))


def test_fuse_weights_and_global_only():
    g, l = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    assert fuse(g, l, 0.6, 0.4).item() == pytest.approx(0.6 * 1 + 0.4 * 2)
    assert fuse(g, l, 0.5, 0.5).item() == pytest.approx(1.5)
    assert fuse(g, None, 0.6, 0.4) is g


def test_padding_included_local_score_equals_a_naive_49_x_77_computation():
    """The reference code's local score: every one of the 77 text positions, the padding ones too."""
    torch.manual_seed(0)
    patches, words = torch.randn(2, 49, 16), torch.randn(3, 77, 16)
    mask = torch.arange(77).unsqueeze(0) < torch.tensor([[9], [14], [12]])  # 9-14 real tokens, the rest padding
    x, y = F.normalize(patches, dim=-1), F.normalize(words, dim=-1)
    naive = torch.stack([torch.stack([(x[i] @ y[j].T).norm(dim=1).norm() for j in range(3)]) for i in range(2)])
    assert torch.allclose(local_similarity(patches, words, None), naive, atol=1e-5)
    assert not torch.allclose(local_similarity(patches, words, mask), naive, atol=1e-3)  # masking changes it
