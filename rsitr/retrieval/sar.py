"""Sort After Reversed retrieval (SAR), iEBAKER's inference-time re-ranking.

A forward retrieval (say text -> image) returns its top-k candidates. For each candidate, SAR runs the
reverse retrieval (image -> text) and looks up the rank the query holds there. SAR is not in the released
reference code, so two readings are offered (``EvalConfig.sar_variant``):

- ``"rank_sum"`` (rsitr's reading of the paper): candidates are re-sorted by
  ``forward_rank + reverse_weight * reverse_rank``, ties broken by the original similarity;
- ``"reverse_rank"`` (GaLR's published re-rank, Yuan et al. 2022, the closest published algorithm):
  candidates are re-sorted by the reverse rank alone, ties kept in forward order.

Candidates outside the top-k keep their order behind them either way, so with ``top_k <= 10`` R@10 cannot
change; the default top-k is 30 (GaLR's). A pair that both directions agree on rises; a candidate that
"prefers" many other queries sinks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DirectionalScores:
    """Score matrices ``[N images, M captions]``, each valid for ranking in one direction."""

    image_to_text: torch.Tensor
    text_to_image: torch.Tensor


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of every entry within its row (0 = highest score)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())


VARIANTS = ("rank_sum", "reverse_rank")


def sar_label(variant: str, top_k: int) -> str:
    """The result-table label of a SAR row, saying which reading of SAR it is."""
    reading = {"rank_sum": "rsitr's rank-sum reading", "reverse_rank": "GaLR reverse-rank re-sort"}[variant]
    return f"SAR ({reading}, top {top_k})"


def _rerank_rows(forward: torch.Tensor, reverse_ranks: torch.Tensor, top_k: int, reverse_weight: float,
                 variant: str) -> torch.Tensor:
    """Scores whose row order is the SAR order for queries along the rows of ``forward``."""
    forward_ranks = _ranks(forward)
    in_top = forward_ranks < top_k
    if variant == "reverse_rank":
        # Reverse rank first, forward rank second: a lexicographic key in one number (ranks are < columns).
        key = reverse_ranks.double() * forward.shape[1] + forward_ranks.double()
    else:
        key = forward_ranks.double() + reverse_weight * reverse_ranks.double()
    # Candidates outside the top-k sort behind every candidate inside it, in their forward order.
    key = torch.where(in_top, key, forward_ranks.double() + key.max() + 1)
    # Lexicographic (key ascending, then similarity descending) turned into one score: higher = better.
    order = torch.from_numpy(np.lexsort((-forward.double().numpy(), key.numpy()), axis=-1))
    positions = torch.arange(forward.shape[1], 0, -1, dtype=torch.float32).expand(order.shape).contiguous()
    return torch.empty(forward.shape).scatter_(1, order, positions)


def sar_rerank(similarity: torch.Tensor, top_k: int = 30, reverse_weight: float = 1.0,
               variant: str = "rank_sum") -> DirectionalScores:
    """Re-rank ``similarity [N, M]`` in both directions with SAR (``variant``: see the module docstring).

    For image->text, row ``i`` is re-sorted using the rank of image ``i`` in each candidate text's
    text->image list; for text->image, symmetric. Returned scores are rank positions (higher = better).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if variant not in VARIANTS:
        raise ValueError(f"SAR variant must be one of {VARIANTS}, got {variant!r}")
    similarity = similarity.detach().cpu().float()
    image_rank_in_text_lists = _ranks(similarity.T).T  # [N, M]: rank of image i among texts j's candidates
    text_rank_in_image_lists = _ranks(similarity)      # [N, M]: rank of text j among image i's candidates
    i2t = _rerank_rows(similarity, image_rank_in_text_lists, top_k, reverse_weight, variant)
    t2i = _rerank_rows(similarity.T, text_rank_in_image_lists.T, top_k, reverse_weight, variant).T
    return DirectionalScores(i2t, t2i)
