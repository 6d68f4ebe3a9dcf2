"""The training objective as one module: every loss term of the configured method for one batch.

Wrapping the model, the KER head and the learnable scales in one ``nn.Module`` lets
DistributedDataParallel sync all of them through a single forward call. Switches come from
:class:`rsitr.config.MethodConfig`:

- global InfoNCE (always) on cosine similarities times CLIP's learnable logit scale (or ``1/temperature``);
- ``local``: InfoNCE on the local similarity. Its values are Frobenius norms of ``P x L`` cosine matrices
  (roughly ``0..sqrt(P*L)``), on another scale than cosines, so it has its own learnable logit scale;
- ``eba``: rows of eliminated pairs removed (see :mod:`rsitr.losses.eba`);
- ``negative_queue``: CMER's recycled negatives as extra columns of the global InfoNCE;
- ``ker``: ``ker_weight`` x masked keyword prediction from the image (see :mod:`rsitr.models.ker_head`);
- ``ftf_loss``: FTF's inter- and intra-modal loss.

The towers and the KER head run under ``precision`` (autocast) on token ids trimmed to the batch's longest
real caption; features are cast back to float32 before any similarity or loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rsitr.config import MethodConfig
from rsitr.losses.eba import EliminateBeforeAlign
from rsitr.losses.infonce import info_nce
from rsitr.models import TextFeatures
from rsitr.models.text import pad_length, trim_padding
from rsitr.precision import autocast
from rsitr.similarity import global_similarity, local_similarity
from rsitr.training.distributed import DistInfo, gather

MAX_LOGIT_SCALE = 100.0
LOCAL_LOGIT_SCALE_INIT = 10.0


@dataclass
class Batch:
    images: torch.Tensor
    tokens: torch.Tensor
    image_ids: torch.Tensor
    pair_ids: torch.Tensor
    masked_tokens: torch.Tensor | None = None
    mask_labels: torch.Tensor | None = None


class RetrievalObjective(nn.Module):
    def __init__(self, model: nn.Module, method: MethodConfig, ker_head: nn.Module | None = None,
                 eba: EliminateBeforeAlign | None = None, queue=None, dist_info: DistInfo | None = None,
                 precision: str = "fp32") -> None:
        """``precision``: a resolved one (see :func:`rsitr.precision.resolve_precision`)."""
        super().__init__()
        self.model, self.method, self.ker_head, self.precision = model, method, ker_head, precision
        self.eba, self.queue = eba, queue
        self.dist_info = dist_info or DistInfo()
        self.local_logit_scale = nn.Parameter(torch.tensor(math.log(LOCAL_LOGIT_SCALE_INIT)))
        self.eliminating = False

    def _scale(self, learned: torch.Tensor) -> torch.Tensor:
        if self.method.temperature is not None:
            return torch.tensor(1.0 / self.method.temperature, device=learned.device)
        return learned.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        method, info = self.method, self.dist_info
        device = batch.images.device
        with autocast(self.precision, device):
            image = self.model.encode_image(batch.images)
            text = self.model.encode_text(*trim_padding(self.model, batch.tokens))
        image, text = image.float(), text.float()
        if info.enabled:  # ranks trim to their own longest caption; all_gather needs one length
            text = TextFeatures(text.global_, pad_length(text.tokens, batch.tokens.shape[1]),
                                pad_length(text.mask, batch.tokens.shape[1]))
        image_global, text_global = gather(image.global_, info), gather(text.global_, info)
        pair_ids, image_ids = gather(batch.pair_ids, info), gather(batch.image_ids, info)
        keep_global = keep_local = None
        if self.eba is not None and self.eliminating:
            keep_global, keep_local = self.eba.keep(pair_ids)

        sim = global_similarity(image_global, text_global)
        extra_text = extra_image = None
        if self.queue is not None:
            queued_images, queued_texts = self.queue.negatives(image_ids)
            if queued_images.shape[0]:
                extra_text = global_similarity(image_global, queued_texts.to(sim.dtype))
                extra_image = global_similarity(text_global, queued_images.to(sim.dtype))
        scale = self._scale(self.model.logit_scale)
        losses = {"global": info_nce(sim, scale, keep_global, extra_text, extra_image)}

        local = None
        if method.local:
            local = local_similarity(gather(image.tokens, info), gather(text.tokens, info), gather(text.mask, info))
            losses["local"] = info_nce(local, self._scale(self.local_logit_scale), keep_local)
        if self.ker_head is not None and batch.masked_tokens is not None:
            masked_tokens, labels = trim_padding(self.model, batch.masked_tokens, batch.mask_labels)
            with autocast(self.precision, device):
                masked = self.model.encode_text(masked_tokens)
                ker_loss = self.ker_head.masked_loss(masked.tokens, image.tokens, masked.mask, labels)
            losses["ker"] = method.ker_weight * ker_loss.float()
        if method.ftf_loss:
            from rsitr.losses.ftf import inter_intra_modal_loss

            losses["ftf"] = inter_intra_modal_loss(image, text, scale, keep=keep_global)

        if self.eba is not None:
            self.eba.record(pair_ids, sim.diagonal(), None if local is None else local.diagonal())
        if self.queue is not None:
            self.queue.push(image_global.detach(), text_global.detach(), image_ids)
        total = sum(losses.values())
        logs = {name: float(value.detach()) for name, value in losses.items()}
        logs["kept_rows"] = float(sim.shape[0] if keep_global is None else keep_global.sum())
        return total, logs
