"""Batch encoding of image files and texts into global embeddings, at a chosen precision.

What ``rsitr classify`` and ``rsitr embed`` share: the vectors are exactly the model's own
``encode_image(...).global_`` / ``encode_text(...).global_`` (projected, not normalised), as float32 on the
CPU. Unreadable image files are skipped and returned as errors, so one bad file does not stop a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rsitr.data import ImageFileDataset, collate_readable
from rsitr.models.precision import inference_precision


@dataclass
class EncodedImageFiles:
    embeddings: torch.Tensor
    """``[K, D]`` float32: the global embeddings of the K readable files."""
    indices: torch.Tensor
    """``[K]`` long: the position in ``paths`` of each embedded file."""
    skipped: dict[int, str]
    """Position in ``paths`` -> error message, for each unreadable file."""


@torch.no_grad()
def encode_image_files(model: nn.Module, paths: Sequence[Path], batch_size: int = 64, device: str | torch.device = "cpu",
                       precision: str = "fp32", num_workers: int = 0, progress: bool = True,
                       desc: str = "encode images") -> EncodedImageFiles:
    """Encode image files with ``model.preprocess_val`` and ``model.encode_image``."""
    model.eval()
    loader = DataLoader(ImageFileDataset(list(paths), model.preprocess_val), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_readable)
    embeddings, indices, skipped = [], [], {}
    with inference_precision(precision, device):
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            skipped.update(batch["errors"])
            if batch["image"] is not None:
                embeddings.append(model.encode_image(batch["image"].to(device)).global_.float().cpu())
                indices.append(batch["index"])
    dim = embeddings[0].shape[1] if embeddings else 0
    return EncodedImageFiles(torch.cat(embeddings) if embeddings else torch.zeros(0, dim),
                             torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long), skipped)


@torch.no_grad()
def encode_texts(model: nn.Module, texts: Sequence[str], batch_size: int = 256, device: str | torch.device = "cpu",
                 precision: str = "fp32", progress: bool = False, desc: str = "encode texts") -> torch.Tensor:
    """``[N, D]`` float32 global embeddings of ``texts`` (``model.tokenize`` then ``model.encode_text``)."""
    model.eval()
    chunks = []
    with inference_precision(precision, device):
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
            tokens = model.tokenize(list(texts[start:start + batch_size])).to(device)
            chunks.append(model.encode_text(tokens).global_.float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)
