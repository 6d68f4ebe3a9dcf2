"""CMER's negative-sample recycling: a FIFO queue of past image and text embeddings used as extra negatives.

Contrastive learning wants many negatives, but a Focus-Adapter run is chosen for small memory, so its batches
are small. The queue keeps the (detached, normalised) global embeddings of the last ``size`` pairs, whatever
the batch size, and the InfoNCE of the current batch adds them as extra columns (see
:func:`rsitr.losses.infonce.info_nce`). Entries are stale by a few steps, which is why they only ever serve
as negatives and never carry gradient.

An entry whose image is among the current batch's images is a positive of that batch (the same image, or
another caption of it), so :meth:`NegativeQueue.negatives` leaves it out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class NegativeQueue:
    """A ring buffer of ``size`` (image embedding, text embedding, image id) triples."""

    def __init__(self, size: int, dim: int) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and embedding dim must be positive, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.images = torch.zeros(size, dim)
        self.texts = torch.zeros(size, dim)
        self.image_ids = torch.full((size,), -1, dtype=torch.long)  # -1: empty slot
        self.pointer = 0

    def __len__(self) -> int:
        return int((self.image_ids >= 0).sum())

    @torch.no_grad()
    def push(self, image_emb: torch.Tensor, text_emb: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Enqueue a batch of pairs ``[B, dim]``, ``[B, dim]``, ``[B]``, overwriting the oldest entries."""
        if image_emb.shape != text_emb.shape or image_emb.shape[0] != image_ids.shape[0] or image_emb.shape[1] != self.dim:
            raise ValueError(f"expected [B, {self.dim}] image and text embeddings and [B] ids, got "
                             f"{tuple(image_emb.shape)}, {tuple(text_emb.shape)}, {tuple(image_ids.shape)}")
        count = image_emb.shape[0]
        if count > self.size:  # only the newest ``size`` pairs fit
            image_emb, text_emb, image_ids = image_emb[-self.size:], text_emb[-self.size:], image_ids[-self.size:]
            count = self.size
        slots = (self.pointer + torch.arange(count)) % self.size
        self.images[slots] = F.normalize(image_emb.detach().float().cpu(), dim=-1)
        self.texts[slots] = F.normalize(text_emb.detach().float().cpu(), dim=-1)
        self.image_ids[slots] = image_ids.detach().cpu().long()
        self.pointer = int((self.pointer + count) % self.size)

    def negatives(self, current_image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queued image and text embeddings ``[Q, dim]`` (on the ids' device) that are no positive of the batch."""
        keep = (self.image_ids >= 0) & ~torch.isin(self.image_ids, current_image_ids.detach().cpu())
        device = current_image_ids.device
        return self.images[keep].to(device), self.texts[keep].to(device)

    def state_dict(self) -> dict:
        return {"images": self.images.clone(), "texts": self.texts.clone(),
                "image_ids": self.image_ids.clone(), "pointer": self.pointer}

    def load_state_dict(self, state: dict) -> None:
        if state["images"].shape != self.images.shape:
            raise ValueError(f"checkpoint queue has shape {tuple(state['images'].shape)}, "
                             f"this run's is {tuple(self.images.shape)} (method.negative_queue changed?)")
        self.images, self.texts = state["images"].clone(), state["texts"].clone()
        self.image_ids, self.pointer = state["image_ids"].clone(), int(state["pointer"])
