"""Batch encoding of texts, at a chosen precision: the one way rsitr encodes captions (images:
:mod:`rsitr.inference.images`). The vectors are exactly the model's own ``encode_text(...).global_`` (projected, not
normalised), as float32 on the CPU.

Captions at their real length. CLIP's tokenizer pads every caption to the full context (77 tokens)
although remote-sensing captions have about 14 real ones. The text transformer is causal and pools at the
end token, so running it on the batch's longest real length gives the same global embedding and the same
real-token features as the full context; the padding columns after it only cost time. :func:`trim_padding`
cuts them from a batch (training); :func:`encode_captions` also sorts the captions by length first, so each
batch holds captions of similar length and is cut to its own longest one, and returns the features in the
captions' order (evaluation, index queries, prompts).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rsitr.models.clip import TextFeatures
from rsitr.models.precision import inference_precision


def trim_padding(model: nn.Module, tokens: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tokens [B, L]`` (and each ``aligned [B, L]`` tensor, e.g. MLM labels) cut after the longest real sequence.

    ``model`` is a :class:`~rsitr.models.RetrievalCLIP` or a wrapper with its ``trim``.
    """
    length = model.trim(tokens).shape[1] if tokens.shape[0] else 1
    return tuple(t[:, :length] for t in (tokens, *aligned))


def pad_length(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dimension 1 of ``[B, L]`` or ``[B, L, D]`` with zeros (False for masks) to ``length``."""
    pad = length - tensor.shape[1]
    return F.pad(tensor, (0, 0, 0, pad) if tensor.dim() == 3 else (0, pad))


@torch.no_grad()
def encode_captions(model: nn.Module, captions: Sequence[str], batch_size: int = 128,
                    device: str | torch.device = "cpu", precision: str = "fp32", progress: bool = False,
                    keep_padding: bool = False, desc: str = "encode captions") -> TextFeatures:
    """Float32 features of ``captions`` on the CPU, in their order, tokens as long as the longest caption.

    Captions are encoded longest first in batches of ``batch_size``, each trimmed to its own longest real
    length, under ``precision``. ``keep_padding`` keeps every position of the context instead (for
    ``MethodConfig.local_include_padding``, whose local score counts the padding tokens).
    """
    model.eval()
    tokens = model.tokenize(list(captions))
    order = torch.argsort(model.real_token_mask(tokens).sum(dim=1), descending=True, stable=True)
    global_, word_tokens, mask = [], [], []
    with inference_precision(precision, device):
        bar = tqdm(total=len(order), unit="caption", desc=desc, disable=not progress, leave=False)
        for start in range(0, len(order), batch_size):
            batch = tokens[order[start:start + batch_size]]
            if not keep_padding:
                (batch,) = trim_padding(model, batch)
            features = model.encode_text(batch.to(device))
            global_.append(features.global_.float().cpu())
            word_tokens.append(features.tokens.float().cpu())
            mask.append(features.mask.cpu())
            bar.update(len(batch))
        bar.close()
    if not global_:
        dim = model.embed_dim
        return TextFeatures(torch.zeros(0, dim), torch.zeros(0, 1, dim), torch.zeros(0, 1, dtype=torch.bool))
    length = word_tokens[0].shape[1]  # the first batch holds the longest caption
    restore = torch.argsort(order)
    return TextFeatures(torch.cat(global_)[restore], torch.cat([pad_length(t, length) for t in word_tokens])[restore],
                        torch.cat([pad_length(m, length) for m in mask])[restore])


def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256, device: str | torch.device = "cpu",
                 precision: str = "fp32", progress: bool = False, desc: str = "encode texts") -> torch.Tensor:
    """``[N, D]`` float32 global embeddings of ``texts`` (through :func:`encode_captions`)."""
    if not texts:
        return torch.zeros(0, 0)
    return encode_captions(model, texts, batch_size, device, precision, progress, desc=desc).global_
