"""Captions through the text tower at their real length: the one way rsitr encodes text.

CLIP's tokenizer pads every caption to the full context (77 tokens) although remote-sensing captions
have about 14 real ones. The text transformer is causal and pools at the end token, so running it on
the batch's longest real length gives the same global embedding and the same real-token features as the
full context; the padding columns after it only cost time. :func:`trim_padding` cuts them from a batch
(training); :func:`encode_captions` also sorts a corpus by length first, so each batch holds captions of
similar length and is cut to its own longest one, and returns the features in the captions' order.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rsitr.models.clip import TextFeatures
from rsitr.precision import autocast


def trim_padding(model, tokens: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tokens [B, L]`` (and each ``aligned [B, L]`` tensor, e.g. MLM labels) cut after the longest real sequence.

    ``model`` is a :class:`~rsitr.models.RetrievalCLIP` or a wrapper with its ``real_token_mask``.
    """
    length = int(model.real_token_mask(tokens).sum(dim=1).max()) if tokens.shape[0] else 1
    return tuple(t[:, :length] for t in (tokens, *aligned))


def pad_length(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dimension 1 of ``[B, L]`` or ``[B, L, D]`` with zeros (False for masks) to ``length``."""
    pad = length - tensor.shape[1]
    return F.pad(tensor, (0, 0, 0, pad) if tensor.dim() == 3 else (0, pad))


@torch.no_grad()
def encode_captions(model, captions: Sequence[str], batch_size: int = 128, device: str | torch.device = "cpu",
                    precision: str = "fp32", progress: bool = False) -> TextFeatures:
    """Float32 features of ``captions`` on the CPU, in their order, tokens as long as the longest caption.

    Captions are encoded longest first in batches of ``batch_size``, each trimmed to its own longest real
    length, under ``precision`` (a resolved one, see :func:`rsitr.precision.resolve_precision`).
    """
    tokens = model.tokenize(list(captions))
    order = torch.argsort(model.real_token_mask(tokens).sum(dim=1), descending=True, stable=True)
    global_, word_tokens, mask = [], [], []
    for start in tqdm(range(0, len(order), batch_size), desc="encode captions", disable=not progress, leave=False):
        (batch,) = trim_padding(model, tokens[order[start:start + batch_size]])
        with autocast(precision, device):
            features = model.encode_text(batch.to(device))
        global_.append(features.global_.float().cpu())
        word_tokens.append(features.tokens.float().cpu())
        mask.append(features.mask.cpu())
    if not global_:
        dim = model.embed_dim
        return TextFeatures(torch.zeros(0, dim), torch.zeros(0, 1, dim), torch.zeros(0, 1, dtype=torch.bool))
    length = word_tokens[0].shape[1]  # the first batch holds the longest caption
    restore = torch.argsort(order)
    return TextFeatures(torch.cat(global_)[restore], torch.cat([pad_length(t, length) for t in word_tokens])[restore],
                        torch.cat([pad_length(m, length) for m in mask])[restore])
