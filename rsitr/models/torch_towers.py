"""The encoders on PyTorch: the other runtime beside :class:`rsitr.models.onnx_runtime.OnnxTowers`, with the same
numpy interface, at any precision (:mod:`rsitr.models.precision`) and on any torch device."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from rsitr.models.encoding import encode_captions
from rsitr.models.precision import inference_precision, resolve_precision


class TorchTowers:
    """``model`` (a :class:`~rsitr.models.RetrievalCLIP` or a wrapper with its interface) in eval mode on ``device``,
    encoding at ``precision``."""

    runtime = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dim = int(model.embed_dim)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Global embeddings ``[B, D]`` and patch tokens ``[B, P, D]`` (float32, not normalised)."""
        batch = torch.stack([self.model.preprocess_val(image.convert("RGB")) for image in images]).to(self.device)
        with inference_precision(self.precision, self.device):
            features = self.model.encode_image(batch).float()
        return features.global_.cpu().numpy(), features.tokens.cpu().numpy()

    def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global embedding ``[D]``, word tokens ``[L, D]`` and mask ``[L]`` of one text at its real length."""
        features = encode_captions(self.model, [text], device=self.device, precision=self.precision)
        return features.global_[0].numpy(), features.tokens[0].numpy(), features.mask[0].numpy()
