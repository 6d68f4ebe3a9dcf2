"""Image-text similarity: global cosine, EBAKER's local similarity, and their fusion.

Local similarity of image i and text j: the cosine matrix ``S = X_i Y_j^T`` between the image's
patch tokens ``X_i [P, D]`` and the text's real word tokens ``Y_j [L, D]`` (padding dropped),
reduced by an L2 norm over words and then an L2 norm over patches. Those two norms together are the
Frobenius norm, and ``||X Y^T||_F^2 = <X^T X, Y^T Y>`` (a sum over the elementwise product of two
``D x D`` Gram matrices). So an ``N x M`` block of local similarities is one matrix product of
flattened Gram matrices: no ``[N, M, P, L]`` tensor is ever built. Gram matrices are symmetric, so only
their block upper triangles are multiplied (entries right of the diagonal blocks weighted by sqrt 2 on each
side): about ``D^2 / 2`` multiply-adds per pair. Building the Gram matrices costs about as much per token, which dominates when few pairs
share them (one query against 100 candidates): then the direct ``P * L * D`` per pair of cosine blocks is
cheaper, and :func:`local_similarity` picks whichever of the two costs less for the shapes it gets. Both
run in float32; blocks are sized to ``max_chunk_bytes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_BYTES = 256 * 2**20
GRAM_BLOCK = 64


def global_similarity(image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[N, M]`` of global embeddings ``[N, D]`` and ``[M, D]``."""
    return F.normalize(image_global, dim=-1) @ F.normalize(text_global, dim=-1).T


def paired_similarity(image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
    """Cosine ``[B]`` of matching rows ``[B, D]``, in fp32 (EBA banks and thresholds stay fp32 under AMP)."""
    with torch.autocast(image_global.device.type, enabled=False):
        return (F.normalize(image_global.float(), dim=-1) * F.normalize(text_global.float(), dim=-1)).sum(dim=-1)


def _gram(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The Gram matrices of L2-normalised tokens ``[B, T, D]`` on and above the diagonal, flattened ``[B, G]``.

    Masked tokens are zeroed. Rows come in blocks of ``GRAM_BLOCK``: each block keeps its columns from its
    own diagonal block on, those right of the diagonal block scaled by sqrt 2 -- so the dot product of two
    such rows is the full Frobenius inner product of the two symmetric Gram matrices, at a little more than
    half the length (``G = 147,456`` instead of ``262,144`` for ``D = 512``).
    """
    tokens = F.normalize(tokens, dim=-1)
    if mask is not None:
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
    dim, parts = tokens.shape[-1], []
    for start in range(0, dim, GRAM_BLOCK):
        stop = min(start + GRAM_BLOCK, dim)
        right = torch.cat([tokens[..., start:stop], tokens[..., stop:] * 2 ** 0.5], dim=-1)
        parts.append((tokens[..., start:stop].transpose(1, 2) @ right).flatten(1))
    return torch.cat(parts, dim=1)


def _gram_length(dim: int) -> int:
    return sum(min(GRAM_BLOCK, dim - start) * (dim - start) for start in range(0, dim, GRAM_BLOCK))


def _squared_by_gram(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None,
                     max_chunk_bytes: int) -> torch.Tensor:
    dim = image_tokens.shape[-1]
    row_bytes = _gram_length(dim) * image_tokens.element_size()
    chunk = max(1, max_chunk_bytes // (2 * row_bytes))
    rows = []
    for i in range(0, image_tokens.shape[0], chunk):
        image_gram = _gram(image_tokens[i:i + chunk], None)
        cols = []
        for j in range(0, text_tokens.shape[0], chunk):
            mask = None if text_mask is None else text_mask[j:j + chunk]
            cols.append(image_gram @ _gram(text_tokens[j:j + chunk], mask).T)
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def _squared_direct(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None,
                    max_chunk_bytes: int) -> torch.Tensor:
    (n, patches, dim), (m, length) = image_tokens.shape, text_tokens.shape[:2]
    image = F.normalize(image_tokens, dim=-1)
    text = F.normalize(text_tokens, dim=-1)
    if text_mask is not None:
        text = text * text_mask.unsqueeze(-1).to(text.dtype)
    text = text.reshape(m * length, dim).T
    chunk = max(1, max_chunk_bytes // max(1, patches * m * length * image.element_size()))
    rows = []
    for i in range(0, n, chunk):
        cosines = (image[i:i + chunk].reshape(-1, dim) @ text).view(-1, patches, m, length)
        rows.append(cosines.square().sum(dim=(1, 3)))
    return torch.cat(rows, dim=0)


def local_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None,
                     max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Local similarity ``[N, M]`` of patch tokens ``[N, P, D]`` and word tokens ``[M, L, D]``.

    ``text_mask [M, L]`` is True on real tokens; padded tokens are ignored (the paper's equation). Without a
    mask every position counts, the padding after the end token included, as EBAKER's reference code does
    (``local_include_padding``). Differentiable.
    """
    (n, patches, dim), (m, length) = image_tokens.shape, text_tokens.shape[:2]
    if text_tokens.shape[-1] != dim:
        raise ValueError(f"image tokens have dim {dim} but text tokens have dim {text_tokens.shape[-1]}")
    if text_mask is not None:
        # Trailing columns that are padding in every text cost work and add nothing: cut them.
        used = text_mask.any(dim=0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        text_tokens, text_mask = text_tokens[:, :length], text_mask[:, :length]
    if n == 0 or m == 0 or length == 0:
        return image_tokens.new_zeros(n, m).clamp_min(1e-12).sqrt()
    gram = _gram_length(dim)
    gram_cost = (n * patches + m * length) * gram + n * m * gram
    direct_cost = n * m * patches * length * dim
    squared = (_squared_direct if direct_cost < gram_cost else _squared_by_gram)(
        image_tokens, text_tokens, text_mask, max_chunk_bytes)
    # Rounding can leave tiny negatives; clamp above 0 so the sqrt gradient stays finite.
    return squared.clamp_min(1e-12).sqrt()


def fuse(global_sim: torch.Tensor, local_sim: torch.Tensor | None, global_weight: float,
         local_weight: float) -> torch.Tensor:
    """``a * global + b * local``; the global similarity alone when there is no local one. The weights are the
    model's (:class:`rsitr.models.ScoringRecipe`, from its training run's ``method``)."""
    if local_sim is None:
        return global_sim
    return global_weight * global_sim + local_weight * local_sim
