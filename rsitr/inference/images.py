"""The one loop that encodes batches of preprocessed images through a model's image tower: ``rsitr eval``
(:func:`rsitr.evaluate.runner.encode_corpus`), ``rsitr embed`` (:mod:`rsitr.inference.embed`) and ``rsitr classify``
(:func:`rsitr.evaluate.zero_shot.classify_images`) run it, on either runtime (the model may be an
:class:`~rsitr.models.onnx_model.OnnxRuntimeModel`). Each batch is averaged over orientations by
:func:`~rsitr.inference.views.average_views`, the step the index's chips take too
(:meth:`rsitr.inference.encoder.Encoder.encode_images`).

Features come back float32 on the CPU, as the model gives them (projected, not normalised, for one orientation).
Unreadable image files (:class:`~rsitr.data.ImageFileDataset`) are skipped and returned with their errors, so one
bad file does not stop a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rsitr.data import ImageFileDataset, collate_readable
from rsitr.data.augment import orient_tensor
from rsitr.inference.views import average_views
from rsitr.models.clip import ImageFeatures
from rsitr.models.precision import inference_precision


@dataclass
class EncodedImages:
    """What :func:`encode_image_batches` returns."""

    embeddings: torch.Tensor
    """``[K, D]`` float32: the global embeddings of the K images encoded."""
    tokens: torch.Tensor | None
    """``[K, P, D]`` float32 patch tokens (None: not kept)."""
    indices: torch.Tensor
    """``[K]`` long: each encoded image's position in the input (a batch's ``index``, or ``image_id``)."""
    skipped: dict[int, str]
    """Position in the input -> error message, for each unreadable file."""


def encode_oriented(encode: Callable[[torch.Tensor], ImageFeatures], images: torch.Tensor,
                    views: Sequence[int] = (0,)) -> ImageFeatures:
    """``encode(images)`` averaged over orientations (:func:`~rsitr.inference.views.average_views` on a preprocessed
    batch). ``encode`` is any runtime's image encoder over a preprocessed batch."""
    def features(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = encode(batch)
        return encoded.global_, encoded.tokens

    return ImageFeatures(*average_views(features, images, views, orient_tensor,
                                        lambda vectors: F.normalize(vectors.float(), dim=-1)))


@torch.no_grad()
def encode_image_batches(model: nn.Module, batches: Iterable[dict], total: int, device: str | torch.device = "cpu",
                         precision: str = "fp32", views: Sequence[int] = (0,), keep_tokens: bool = True,
                         progress: bool = True, desc: str = "encode images") -> EncodedImages:
    """Encode ``batches`` (a DataLoader's: ``image`` ``[B, C, H, W]`` or None when no image of it was readable, and
    with :func:`~rsitr.data.collate_readable` ``index`` and ``errors``) of ``total`` images with
    ``model.encode_image`` under ``precision``, each averaged over ``views``."""
    model.eval()
    global_, tokens, indices, skipped = [], [], [], {}
    bar = tqdm(total=total, unit="image", desc=desc, disable=not progress, leave=False)
    for batch in batches:
        skipped.update(batch.get("errors", {}))
        bar.update((0 if batch["image"] is None else len(batch["image"])) + len(batch.get("errors", {})))
        if batch["image"] is None:
            continue
        with inference_precision(precision, device):
            features = encode_oriented(model.encode_image, batch["image"].to(device), views)
        global_.append(features.global_.float().cpu())
        if keep_tokens:
            tokens.append(features.tokens.float().cpu())
        indices.append(batch["index"] if "index" in batch else batch["image_id"])
    bar.close()
    dim = global_[0].shape[1] if global_ else 0
    return EncodedImages(torch.cat(global_) if global_ else torch.zeros(0, dim),
                         (torch.cat(tokens) if tokens else torch.zeros(0, 1, dim)) if keep_tokens else None,
                         torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long), skipped)


def encode_image_files(model: nn.Module, paths: Sequence[Path], batch_size: int = 64,
                       device: str | torch.device = "cpu", precision: str = "fp32", num_workers: int = 0,
                       progress: bool = True, desc: str = "encode images", views: Sequence[int] = (0,)
                       ) -> EncodedImages:
    """Global embeddings of image files (read and preprocessed with ``model.preprocess_val`` in ``num_workers``
    DataLoader workers), each averaged over the orientations ``views``; unreadable ones skipped."""
    loader = DataLoader(ImageFileDataset(list(paths), model.preprocess_val), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_readable)
    return encode_image_batches(model, loader, len(paths), device, precision, views, keep_tokens=False,
                                progress=progress, desc=desc)
