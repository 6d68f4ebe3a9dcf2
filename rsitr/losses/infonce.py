"""Symmetric InfoNCE over a batch similarity matrix, with EBA's row elimination and extra negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(similarity: torch.Tensor, logit_scale: torch.Tensor | float, keep: torch.Tensor | None = None,
             extra_text_negatives: torch.Tensor | None = None,
             extra_image_negatives: torch.Tensor | None = None, directions: str = "mean") -> torch.Tensor:
    """Symmetric InfoNCE of an ``N x N`` similarity matrix whose diagonal holds the positive pairs.

    ``logit_scale`` multiplies the similarities (CLIP's ``exp(learned)`` or ``1 / temperature``).
    ``keep [N]`` (bool) is EBA: a pair marked False loses its row in the image->text loss and its row in
    the text->image loss, so the ``N x N`` problem becomes ``(N-M) x N`` in each direction; the dropped
    pair still serves as a negative for the others. ``extra_text_negatives [N, Q]`` and
    ``extra_image_negatives [N, Q]`` are similarities of each batch image to queued texts and of each
    batch text to queued images (CMER's recycled negatives), appended as extra columns.
    ``directions`` combines the two directions' losses: ``"mean"`` (rsitr) or ``"sum"`` (EBAKER's reference
    code, where each InfoNCE so weighs twice as much against the 0.5 x MLM term). 0 when every row is eliminated.
    """
    if directions not in ("mean", "sum"):
        raise ValueError(f"directions must be mean or sum, got {directions!r}")
    n = similarity.shape[0]
    if similarity.shape != (n, n):
        raise ValueError(f"expected a square similarity matrix, got {tuple(similarity.shape)}")
    targets = torch.arange(n, device=similarity.device)
    image_to_text = similarity
    text_to_image = similarity.T
    if extra_text_negatives is not None:
        image_to_text = torch.cat([image_to_text, extra_text_negatives], dim=1)
    if extra_image_negatives is not None:
        text_to_image = torch.cat([text_to_image, extra_image_negatives], dim=1)
    if keep is not None:
        image_to_text, text_to_image, targets = image_to_text[keep], text_to_image[keep], targets[keep]
        if targets.numel() == 0:
            return similarity.sum() * 0.0
    loss_i2t = F.cross_entropy(logit_scale * image_to_text, targets)
    loss_t2i = F.cross_entropy(logit_scale * text_to_image, targets)
    total = loss_i2t + loss_t2i
    return total if directions == "sum" else total / 2
