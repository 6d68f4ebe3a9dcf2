"""The training objective as one module: every loss term of the configured method for one batch.

Wrapping the model, the KER head and the learnable scales in one ``nn.Module`` lets
DistributedDataParallel sync all of them through a single forward call. Switches come from
:class:`rsitr.config.MethodConfig`:

- global InfoNCE (always) on cosine similarities times CLIP's learnable logit scale (or ``1/temperature``);
  ``infonce_directions`` averages (rsitr) or sums (reference code) the two directions of every InfoNCE;
- ``local``: InfoNCE on the local similarity, computed in fp32 whatever the autocast precision. Its values are
  Frobenius norms of ``P x L`` cosine matrices (roughly ``0..sqrt(P*L)``), on another scale than cosines, so
  it has its own learnable logit scale (or the same ``1/temperature``, as the reference code's factor 20).
  ``local_include_padding`` counts the padding positions too (reference code);
- ``eba``: rows of eliminated pairs removed (see :mod:`rsitr.losses.eba`); the banks get fp32 similarities;
- ``negative_queue``: CMER's recycled negatives as extra columns of the global InfoNCE;
- ``ker``: ``ker_weight`` x masked keyword prediction from the image (see :mod:`rsitr.models.ker_head`);
- ``ftf_loss``: FTF's inter- and intra-modal loss.

The towers and the KER head run under ``precision`` (autocast) on token ids trimmed to the batch's longest
real caption (the full context when the local score counts padding, ``local_include_padding``); features are
cast back to float32 before any similarity or loss.
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
from rsitr.models.encoding import pad_length, trim_padding
from rsitr.models.precision import inference_precision
from rsitr.similarity import global_similarity, local_similarity, paired_similarity
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
        """``precision``: see :mod:`rsitr.models.precision`."""
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

    def _local(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The batch's local similarity matrix in fp32 (the sum of P x L squared cosines loses digits in bf16)."""
        mask = None if self.method.local_include_padding else text_mask
        with torch.autocast(image_tokens.device.type, enabled=False):
            return local_similarity(image_tokens.float(), text_tokens.float(), mask)

    def _this_rank(self, gathered: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """This rank's slice of a tensor gathered over ranks (every rank has the same batch size)."""
        if gathered is None or not self.dist_info.enabled:
            return gathered
        start = self.dist_info.rank * batch_size
        return gathered[start:start + batch_size]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        method, info = self.method, self.dist_info
        directions = method.infonce_directions
        device = batch.images.device
        tokens = batch.tokens
        if not method.keeps_padding:  # a padding-counting local score needs them all
            (tokens,) = trim_padding(self.model, tokens)
        with inference_precision(self.precision, device):
            image, text = self.model.encode_image(batch.images), self.model.encode_text(tokens)
        image, text = image.float(), text.float()
        if info.enabled and text.tokens.shape[1] < batch.tokens.shape[1]:  # all_gather needs one length on all ranks
            text = TextFeatures(text.global_, pad_length(text.tokens, batch.tokens.shape[1]),
                                pad_length(text.mask, batch.tokens.shape[1]))
        image_global, text_global = gather(image.global_, info), gather(text.global_, info)
        pair_ids, image_ids = gather(batch.pair_ids, info), gather(batch.image_ids, info)

        sim = global_similarity(image_global, text_global)
        positives = paired_similarity(image_global, text_global)
        local = None
        if method.local:
            local = self._local(gather(image.tokens, info), gather(text.tokens, info), gather(text.mask, info))
        keep_global = keep_local = None
        if self.eba is not None and self.eliminating:
            keep_global, keep_local = self.eba.keep(pair_ids, positives, None if local is None else local.diagonal())

        extra_text = extra_image = None
        if self.queue is not None:
            queued_images, queued_texts = self.queue.negatives(image_ids)
            if queued_images.shape[0]:
                extra_text = global_similarity(image_global, queued_texts.to(sim.dtype))
                extra_image = global_similarity(text_global, queued_images.to(sim.dtype))
        scale = self._scale(self.model.logit_scale)
        losses = {"global": info_nce(sim, scale, keep_global, extra_text, extra_image, directions)}
        if local is not None:
            losses["local"] = info_nce(local, self._scale(self.local_logit_scale), keep_local, directions=directions)
        if self.ker_head is not None and batch.masked_tokens is not None:
            masked_tokens, labels = trim_padding(self.model, batch.masked_tokens, batch.mask_labels)
            with inference_precision(self.precision, device):
                masked = self.model.encode_text(masked_tokens)
                ker_loss = self.ker_head.masked_loss(masked.tokens, image.tokens, masked.mask, labels)
            losses["ker"] = method.ker_weight * ker_loss.float()
        if method.ftf_loss:
            from rsitr.losses.ftf import inter_intra_modal_loss

            # This rank's features with this rank's rows of the gathered keep mask; the global InfoNCE above
            # (over all ranks' samples) is not counted a second time.
            keep = self._this_rank(keep_global, batch.images.shape[0])
            losses["ftf"] = inter_intra_modal_loss(image, text, scale, keep=keep, include_global=False,
                                                   directions=directions)

        if self.eba is not None:
            self.eba.record(pair_ids, positives, None if local is None else local.diagonal())
        if self.queue is not None:
            self.queue.push(image_global.detach(), text_global.detach(), image_ids)
        total = sum(losses.values())
        logs = {name: float(value.detach()) for name, value in losses.items()}
        logs["kept_rows"] = float(sim.shape[0] if keep_global is None else keep_global.sum())
        return total, logs
