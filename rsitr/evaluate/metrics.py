"""Recall@K for image-text retrieval in both directions, and their mean (mR).

A similarity matrix ``[N images, M captions]`` is scored against ``caption_image [M]``, the index of each
caption's image. Image->text: a hit at k if *any* of the image's captions is among the top k.
Text->image: a hit at k if the caption's image is among the top k. Ties count against the query:
a ground-truth item ranks behind every other item with an equal score, so a constant matrix scores
(almost) nothing instead of everything.
"""

from __future__ import annotations

import torch

KS = (1, 5, 10)
METRIC_NAMES = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "mR")


def image_to_text_ranks(similarity: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """0-based rank of each image's best-ranked ground-truth caption ``[N]``."""
    n = similarity.shape[0]
    is_gt = caption_image.unsqueeze(0) == torch.arange(n, device=similarity.device).unsqueeze(1)  # [N, M]
    if not bool(is_gt.any(dim=1).all()):
        missing = (~is_gt.any(dim=1)).nonzero().flatten().tolist()[:5]
        raise ValueError(f"images without any caption: {missing}")
    best_gt = similarity.masked_fill(~is_gt, float("-inf")).max(dim=1).values
    return ((similarity >= best_gt.unsqueeze(1)) & ~is_gt).sum(dim=1)


def text_to_image_ranks(similarity: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    """0-based rank of each caption's image ``[M]``."""
    by_text = similarity.T  # [M, N]
    gt_score = by_text.gather(1, caption_image.unsqueeze(1))
    return (by_text >= gt_score).sum(dim=1) - 1


def recall_metrics(similarity: torch.Tensor, caption_image: torch.Tensor | list[int],
                   text_to_image_similarity: torch.Tensor | None = None) -> dict[str, float]:
    """R@1/5/10 image->text and text->image in percent, and mR, their mean.

    ``text_to_image_similarity`` (same shape) ranks the text->image direction when a re-ranker (SAR) produced
    a separate score matrix per direction; by default ``similarity`` ranks both.
    """
    caption_image = torch.as_tensor(caption_image, device=similarity.device, dtype=torch.long)
    if similarity.shape[1] != caption_image.numel():
        raise ValueError(f"similarity has {similarity.shape[1]} captions but {caption_image.numel()} labels")
    similarity = similarity.float()
    i2t = image_to_text_ranks(similarity, caption_image)
    t2i_similarity = similarity if text_to_image_similarity is None else text_to_image_similarity.float()
    if t2i_similarity.shape != similarity.shape:
        raise ValueError(f"direction matrices differ in shape: {tuple(similarity.shape)} vs {tuple(t2i_similarity.shape)}")
    t2i = text_to_image_ranks(t2i_similarity, caption_image)
    metrics = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in KS:
            metrics[f"{name}_R@{k}"] = 100.0 * (ranks < k).float().mean().item()
    metrics["mR"] = sum(metrics[name] for name in METRIC_NAMES[:-1]) / 6
    return metrics
