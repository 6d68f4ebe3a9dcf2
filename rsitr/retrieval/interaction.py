"""FTF's parameter-free, balanced text-guided interaction between word tokens and patch tokens.

For one image (patch tokens ``x_p``) and one caption (word tokens ``y_l``, only those its mask marks),
all tokens L2-normalised and ``S[p, l] = <x_p, y_l>`` their cosine matrix:

* word -> patch (text-guided): each word attends over the patches, ``a[:, l] = softmax_p(S[:, l] / t)``,
  giving a text-guided visual feature ``v_l = sum_p a[p, l] x_p``; the word scores ``cos(y_l, v_l)``,
  averaged over the caption's words.
* patch -> word (image-guided): each patch attends over the words, ``b[p, :] = softmax_l(S[p, :] / t)``,
  giving ``u_p = sum_l b[p, l] y_l``; the patch scores ``cos(x_p, u_p)``, averaged over the patches.

The interaction score is the plain mean of the two directions ("balanced": neither the caption's nor the
image's view of the pair dominates), so it lies in ``[-1, 1]`` like a cosine. There are no learnable
parameters: ``t`` is a constant. Attended features are never built: ``<y_l, v_l> = sum_p a[p, l] S[p, l]``
and ``||v_l||^2 = a[:, l]^T G a[:, l]`` with the patch Gram matrix ``G = X X^T`` (``P x P``), which costs
``P^2`` per word instead of ``P * D`` (and the word Gram matrix likewise for ``u_p``).

Two layouts share that reduction: all pairs of ``N`` images and ``M`` captions (the exhaustive scorer,
and the FTF loss on a batch), and each caption with its own ``K`` candidate images (FTF's stage 2, which
reads the gallery's normalised patches and Gram matrices prepared once by :func:`prepare_patches`).
Both are computed in blocks whose intermediate tensors stay under ``max_chunk_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsitr.similarity import DEFAULT_CHUNK_BYTES

DEFAULT_TEMPERATURE = 0.05
"""Softmax temperature of both attention directions; small, so each word / patch attends to a few matches."""

_LIVE_TENSORS_PER_PAIR = 8
"""About how many ``P x L`` float tensors the reduction holds at once; sizes the blocks."""


def _trim_padding(text_tokens: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut trailing all-padding columns after checking that every caption has a token and pads at the end."""
    if text_mask.shape != text_tokens.shape[:2]:
        raise ValueError(f"text_mask {tuple(text_mask.shape)} does not match text_tokens "
                         f"{tuple(text_tokens.shape)}; expected [M, L]")
    text_mask = text_mask.bool()
    lengths = text_mask.sum(dim=1)
    if bool((lengths == 0).any()):
        empty = (lengths == 0).nonzero().flatten().tolist()[:5]
        raise ValueError(f"captions without any real token (text_mask all False): {empty}")
    prefix = torch.arange(text_mask.shape[1], device=text_mask.device) < lengths.unsqueeze(1)
    if not bool(torch.equal(text_mask, prefix)):
        raise ValueError("text_mask must mark real tokens first and padding at the end of each sequence")
    keep = int(lengths.max().item()) if lengths.numel() else 0
    return text_tokens[:, :keep], text_mask[:, :keep]


def _check_dims(image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> None:
    if image_tokens.dim() != 3 or text_tokens.dim() != 3:
        raise ValueError(f"expected image tokens [N, P, D] and text tokens [M, L, D], got "
                         f"{tuple(image_tokens.shape)} and {tuple(text_tokens.shape)}")
    if image_tokens.shape[-1] != text_tokens.shape[-1]:
        raise ValueError(f"image tokens have dim {image_tokens.shape[-1]} but text tokens have dim "
                         f"{text_tokens.shape[-1]}")


def _gram(tokens: torch.Tensor) -> torch.Tensor:
    """Token Gram matrices ``[B, T, T]`` of (already normalised) tokens ``[B, T, D]``."""
    return tokens @ tokens.transpose(-1, -2)


def _balanced_score(cos: torch.Tensor, word_mask: torch.Tensor, patch_gram: torch.Tensor,
                    word_gram: torch.Tensor, temperature: float) -> torch.Tensor:
    """Balanced interaction score ``[...]`` from cosines ``[..., P, L]`` (see the module docstring).

    ``word_mask [..., L]``, ``patch_gram [..., P, P]`` and ``word_gram [..., L, L]`` broadcast against ``cos``.
    """
    logits = cos / temperature
    eps = torch.finfo(cos.dtype).tiny

    # word -> patch: a softmax over patches for every word; padding words are dropped from the mean.
    attn = logits.softmax(dim=-2)
    visual_norm = (attn * torch.einsum("...pq,...ql->...pl", patch_gram, attn)).sum(dim=-2)
    word_scores = (attn * cos).sum(dim=-2) / visual_norm.clamp_min(eps).sqrt()  # [..., L]
    weights = word_mask.to(cos.dtype)
    text_to_image = (word_scores * weights).sum(dim=-1) / weights.sum(dim=-1)

    # patch -> word: a softmax over the caption's real words for every patch.
    attn = logits.masked_fill(~word_mask.unsqueeze(-2), float("-inf")).softmax(dim=-1)
    textual_norm = (attn * torch.einsum("...pl,...lk->...pk", attn, word_gram)).sum(dim=-1)
    patch_scores = (attn * cos).sum(dim=-1) / textual_norm.clamp_min(eps).sqrt()  # [..., P]
    image_to_text = patch_scores.mean(dim=-1)

    return (text_to_image + image_to_text) / 2


def _pairs_per_block(patches: int, words: int, element_size: int, max_chunk_bytes: int) -> int:
    """Image-caption pairs per block: ``_LIVE_TENSORS_PER_PAIR`` ``P x L`` tensors and a gathered Gram matrix."""
    pair_bytes = (_LIVE_TENSORS_PER_PAIR * patches * max(words, 1) + patches ** 2) * element_size
    return max(1, max_chunk_bytes // pair_bytes)


@dataclass
class PreparedPatches:
    """The text-agnostic half of the interaction: L2-normalised patch tokens ``[N, P, D]`` and their Gram
    matrices ``[N, P, P]``. A gallery computes it once, when it is indexed, not per query."""

    tokens: torch.Tensor
    gram: torch.Tensor


def prepare_patches(image_tokens: torch.Tensor) -> PreparedPatches:
    """:class:`PreparedPatches` of patch tokens ``[N, P, D]``."""
    if image_tokens.dim() != 3:
        raise ValueError(f"expected image tokens [N, P, D], got {tuple(image_tokens.shape)}")
    tokens = F.normalize(image_tokens, dim=-1)
    return PreparedPatches(tokens, _gram(tokens))


def _gather(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows[index]`` for a 2-D ``index``; ``index_select`` copies rows several times faster on CPU."""
    return rows.index_select(0, index.flatten()).view(*index.shape, *rows.shape[1:])


def interaction_similarity(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                           temperature: float = DEFAULT_TEMPERATURE,
                           max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Interaction scores ``[N, M]`` of every image (patch tokens ``[N, P, D]``) with every caption.

    ``text_tokens [M, L, D]``; ``text_mask [M, L]`` is True on the tokens that count as words (padding at
    the end). Differentiable, so the FTF loss scores a training batch with it.
    """
    _check_dims(image_tokens, text_tokens)
    text_tokens, text_mask = _trim_padding(text_tokens, text_mask)
    n, patches = image_tokens.shape[:2]
    m, words = text_tokens.shape[:2]
    if n == 0 or m == 0:
        return image_tokens.new_zeros(n, m)
    prepared = prepare_patches(image_tokens)
    image_tokens, patch_gram = prepared.tokens, prepared.gram
    text_tokens = F.normalize(text_tokens, dim=-1)
    word_gram = _gram(text_tokens)
    pairs = _pairs_per_block(patches, words, image_tokens.element_size(), max_chunk_bytes)
    text_chunk = min(m, pairs)
    image_chunk = max(1, pairs // text_chunk)
    rows = []
    for i in range(0, n, image_chunk):
        images = slice(i, i + image_chunk)
        cols = []
        for j in range(0, m, text_chunk):
            texts = slice(j, j + text_chunk)
            cos = torch.einsum("npd,mld->nmpl", image_tokens[images], text_tokens[texts])
            cols.append(_balanced_score(cos, text_mask[texts].unsqueeze(0), patch_gram[images].unsqueeze(1),
                                        word_gram[texts].unsqueeze(0), temperature))
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def candidate_interaction(patches: PreparedPatches, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                          candidates: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                          max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """Interaction scores ``[M, K]`` of each caption with its own ``K`` candidate images only.

    The score of :func:`interaction_similarity`, for the gallery ``patches`` (see :func:`prepare_patches`)
    and ``candidates [M, K]``, image indices per caption (FTF's stage-1 shortlist).
    """
    _check_dims(patches.tokens, text_tokens)
    text_tokens, text_mask = _trim_padding(text_tokens, text_mask)
    n, num_patches = patches.tokens.shape[:2]
    m, words = text_tokens.shape[:2]
    if candidates.dim() != 2 or candidates.shape[0] != m:
        raise ValueError(f"candidates must be [M={m}, K] image indices, got {tuple(candidates.shape)}")
    if candidates.numel() and (int(candidates.min()) < 0 or int(candidates.max()) >= n):
        raise ValueError(f"candidates must index the {n} images (0 .. {n - 1}); got values "
                         f"{int(candidates.min())} .. {int(candidates.max())}")
    k = candidates.shape[1]
    if m == 0 or k == 0:
        return patches.tokens.new_zeros(m, k)
    text_tokens = F.normalize(text_tokens, dim=-1)
    word_gram = _gram(text_tokens)
    pairs = _pairs_per_block(num_patches, words, patches.tokens.element_size(), max_chunk_bytes)
    queries = max(1, pairs // k)
    scores = []
    for start in range(0, m, queries):
        texts, shortlist = slice(start, start + queries), candidates[start:start + queries]
        cos = torch.einsum("qkpd,qld->qkpl", _gather(patches.tokens, shortlist), text_tokens[texts])
        scores.append(_balanced_score(cos, text_mask[texts].unsqueeze(1), _gather(patches.gram, shortlist),
                                      word_gram[texts].unsqueeze(1), temperature))
    return torch.cat(scores)
