"""FTF's training objective: inter-modal alignment at two granularities plus intra-modal consistency.

Inter-modal: one symmetric InfoNCE per granularity over the batch, with the diagonal as positives —
the global cosine matrix, and the fine matrix of the parameter-free balanced interaction
(:func:`rsitr.retrieval.interaction.interaction_similarity`) that FTF's stage 2 ranks with. Training on
the interaction score itself teaches the tokens what the re-ranker will ask of them.

Intra-modal: within each modality, the global embedding of a sample and the mean of its own local tokens
(patches; real words only) form the positive pair of an InfoNCE against the other samples' pooled tokens.
This keeps the coarse stage-1 embedding and the tokens stage 2 reads describing the same content, so the
shortlist and the re-ranker agree. InfoNCE (rather than a plain cosine or MSE pull) also pushes samples
apart, so the pull cannot be met by collapsing every pooled token onto one direction.

Total: ``inter_global + fine_weight * inter_fine + intra_weight * (intra_image + intra_text) / 2``; a training
objective that already has the global InfoNCE leaves ``inter_global`` out (``include_global=False``).
"""

from __future__ import annotations

import torch

from rsitr.losses.infonce import info_nce
from rsitr.models.clip import ImageFeatures, TextFeatures
from rsitr.retrieval.interaction import DEFAULT_TEMPERATURE, interaction_similarity
from rsitr.similarity import global_similarity


def _mean_real_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``[B, D]`` of tokens ``[B, T, D]`` over the positions ``mask [B, T]`` marks."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def inter_intra_modal_loss(image: ImageFeatures, text: TextFeatures, logit_scale: torch.Tensor | float,
                           fine_weight: float = 1.0, intra_weight: float = 1.0,
                           temperature: float = DEFAULT_TEMPERATURE,
                           keep: torch.Tensor | None = None, include_global: bool = True,
                           directions: str = "mean") -> torch.Tensor:
    """FTF loss of a batch of ``B`` matching image-caption pairs (see the module docstring).

    ``logit_scale`` multiplies every similarity (CLIP's ``exp`` of the learned scale); ``temperature`` is the
    interaction's attention temperature. ``keep [B]`` (EBA) drops pairs' rows from the inter-modal terms;
    the intra-modal terms compare each sample only with its own modality, so they keep every row.
    ``directions`` is :func:`~rsitr.losses.infonce.info_nce`'s.
    """
    batch = image.global_.shape[0]
    if text.global_.shape[0] != batch:
        raise ValueError(f"batch has {batch} images but {text.global_.shape[0]} captions; FTF needs matching pairs")
    if keep is not None and keep.shape[0] != batch:
        raise ValueError(f"keep has {keep.shape[0]} entries for a batch of {batch} pairs")
    fine = interaction_similarity(image.tokens, text.tokens, text.mask, temperature)
    inter_fine = info_nce(fine, logit_scale, keep, directions=directions)
    pooled_patches = image.tokens.mean(dim=1)
    pooled_words = _mean_real_tokens(text.tokens, text.mask)
    intra_image = info_nce(global_similarity(image.global_, pooled_patches), logit_scale, directions=directions)
    intra_text = info_nce(global_similarity(text.global_, pooled_words), logit_scale, directions=directions)
    total = fine_weight * inter_fine + intra_weight * (intra_image + intra_text) / 2
    if include_global:
        total = total + info_nce(global_similarity(image.global_, text.global_), logit_scale, keep, directions=directions)
    return total
