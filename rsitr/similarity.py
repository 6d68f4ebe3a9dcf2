"""Image-text similarity: global cosine, EBAKER's local similarity, and their fusion.

Local similarity of image i and text j: the cosine matrix ``S = X_i Y_j^T`` between the image's
patch tokens ``X_i [P, D]`` and the text's real word tokens ``Y_j [L, D]`` (padding dropped),
reduced by an L2 norm over words and then an L2 norm over patches. Those two norms together are the
Frobenius norm, and ``||X Y^T||_F^2 = <X^T X, Y^T Y>`` (a sum over the elementwise product of two
``D x D`` Gram matrices). So an ``N x M`` block of local similarities is one matrix product of
flattened Gram matrices: no ``[N, M, P, L]`` tensor is ever built, and the cost per pair is ``D^2``
instead of ``P * L * D``. Blocks are sized to ``max_chunk_bytes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_GLOBAL_WEIGHT = 0.6
DEFAULT_LOCAL_WEIGHT = 0.4
DEFAULT_CHUNK_BYTES = 256 * 2**20


def global_similarity(image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[N, M]`` of global embeddings ``[N, D]`` and ``[M, D]``."""
    return F.normalize(image_global, dim=-1) @ F.normalize(text_global, dim=-1).T


def paired_similarity(image_global: torch.Tensor, text_global: torch.Tensor) -> torch.Tensor:
    """Cosine ``[B]`` of matching rows ``[B, D]``, in fp32 (EBA banks and thresholds stay fp32 under AMP)."""
    with torch.autocast(image_global.device.type, enabled=False):
        return (F.normalize(image_global.float(), dim=-1) * F.normalize(text_global.float(), dim=-1)).sum(dim=-1)


def _gram(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Flattened Gram matrices ``[B, D*D]`` of L2-normalised tokens ``[B, T, D]``, masked tokens zeroed."""
    tokens = F.normalize(tokens, dim=-1)
    if mask is not None:
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
    return torch.einsum("btd,bte->bde", tokens, tokens).flatten(1)


def local_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None,
                     max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Local similarity ``[N, M]`` of patch tokens ``[N, P, D]`` and word tokens ``[M, L, D]``.

    ``text_mask [M, L]`` is True on real tokens; padded tokens are ignored (the paper's equation). Without a
    mask every position counts, the padding after the end token included, as EBAKER's reference code does
    (``local_include_padding``). Differentiable.
    """
    n, m, dim = image_tokens.shape[0], text_tokens.shape[0], image_tokens.shape[-1]
    if text_tokens.shape[-1] != dim:
        raise ValueError(f"image tokens have dim {dim} but text tokens have dim {text_tokens.shape[-1]}")
    if text_mask is not None:
        # Trailing columns that are padding in every text cost work and add nothing: cut them.
        used = text_mask.any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else 0
        text_tokens, text_mask = text_tokens[:, :keep], text_mask[:, :keep]
    row_bytes = dim * dim * image_tokens.element_size()
    chunk = max(1, max_chunk_bytes // (2 * row_bytes))
    rows = []
    for i in range(0, n, chunk):
        image_gram = _gram(image_tokens[i:i + chunk], None)
        cols = []
        for j in range(0, m, chunk):
            mask = None if text_mask is None else text_mask[j:j + chunk]
            cols.append(image_gram @ _gram(text_tokens[j:j + chunk], mask).T)
        rows.append(torch.cat(cols, dim=1) if cols else image_gram.new_zeros(image_gram.shape[0], 0))
    squared = torch.cat(rows, dim=0) if rows else image_tokens.new_zeros(0, m)
    # Rounding can leave tiny negatives; clamp above 0 so the sqrt gradient stays finite.
    return squared.clamp_min(1e-12).sqrt()


def fuse(global_sim: torch.Tensor, local_sim: torch.Tensor | None, global_weight: float = DEFAULT_GLOBAL_WEIGHT,
         local_weight: float = DEFAULT_LOCAL_WEIGHT) -> torch.Tensor:
    """``a * global + b * local``; the global similarity alone when there is no local one."""
    if local_sim is None:
        return global_sim
    return global_weight * global_sim + local_weight * local_sim
