"""Turning chips and queries into the vectors the index stores, and fingerprinting the model that did it.

Global embeddings are L2-normalised float32, so FAISS inner products are cosines. Local tokens are
L2-normalised too before they are stored as float16 (values in [-1, 1] keep float16 precise), which
:func:`rsitr.similarity.local_similarity` accepts unchanged since it normalises again.

The fingerprint is the embedding dimension plus the global embeddings of a fixed synthetic probe
image and probe caption. Two encoders are compatible when dims match and the probe embeddings agree
to ``PROBE_TOLERANCE``: that catches another model, another checkpoint behind the same path, or
changed weights, while ignoring float noise between machines. The probe is always encoded in fp32, so an
index built in one precision opens in another.

Chips and queries are encoded under the encoder's precision (see :mod:`rsitr.models.precision`); a query goes
through :func:`rsitr.models.encoding.encode_captions` (its real length, not the 77-token context).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rsitr.models.encoding import encode_captions
from rsitr.models.factory import LoadedModel
from rsitr.models.precision import inference_precision, resolve_precision

PROBE_TEXT = "an aerial image of a harbour with boats next to a green park"
PROBE_TOLERANCE = 1e-3


@dataclass
class EncodedImages:
    embeddings: np.ndarray
    """``[B, D]`` float32, L2-normalised."""
    tokens: np.ndarray
    """``[B, P, D]`` float32 patch tokens, each L2-normalised."""


@dataclass
class EncodedText:
    embedding: np.ndarray
    """``[D]`` float32, L2-normalised."""
    tokens: np.ndarray
    """``[L, D]`` float32 word tokens, each L2-normalised; ``L`` is the query's real length."""
    mask: np.ndarray
    """``[L]`` bool, True on real tokens."""


@dataclass(frozen=True)
class Fingerprint:
    dim: int
    probe: tuple[float, ...]

    @property
    def digest(self) -> str:
        """Short hash of the probe embeddings rounded to 2 decimals, for humans (compatibility uses the vector)."""
        return hashlib.sha256(np.round(np.asarray(self.probe), 2).tobytes()).hexdigest()[:12]

    def matches(self, other: Fingerprint) -> bool:
        return self.dim == other.dim and bool(
            np.allclose(self.probe, other.probe, atol=PROBE_TOLERANCE, rtol=0.0))

    def to_dict(self) -> dict:
        return {"dim": self.dim, "digest": self.digest, "probe": list(self.probe)}

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        return cls(int(data["dim"]), tuple(float(v) for v in data["probe"]))


def _probe_image() -> Image.Image:
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    pixels = np.stack([ramp[None, :].repeat(64, 0), ramp[:, None].repeat(64, 1),
                       np.abs(ramp[None, :] - ramp[:, None])], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


class Encoder:
    """A loaded model (:func:`rsitr.models.create_model`'s result) in eval mode on ``device``, encoding in
    ``precision``, with the name and pretrained value it was loaded from and its scoring recipe: a model trained with
    EBAKER's local similarity (or not known not to be) re-ranks text queries with it, fused by its own weights; a
    model trained on the global score alone ranks by its global cosine."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.model = loaded.model.eval().to(device)
        self.model_name = loaded.name
        self.pretrained = loaded.pretrained
        self.recipe = loaded.recipe
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dim = int(self.encode_text(PROBE_TEXT).embedding.shape[0])

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> EncodedImages:
        batch = torch.stack([self.model.preprocess_val(image.convert("RGB")) for image in images]).to(self.device)
        with inference_precision(self.precision, self.device):
            features = self.model.encode_image(batch).float()
        return EncodedImages(F.normalize(features.global_, dim=-1).cpu().numpy(),
                             F.normalize(features.tokens, dim=-1).cpu().numpy())

    def encode_text(self, text: str) -> EncodedText:
        """The query's features; ``tokens`` and ``mask`` are as long as its real tokens (no padding)."""
        features = encode_captions(self.model, [text], device=self.device, precision=self.precision)
        return EncodedText(F.normalize(features.global_[0], dim=-1).numpy(),
                           F.normalize(features.tokens[0], dim=-1).numpy(), features.mask[0].numpy())

    def fingerprint(self) -> Fingerprint:
        precision, self.precision = self.precision, "fp32"
        try:
            probe = np.concatenate([self.encode_images([_probe_image()]).embeddings[0],
                                    self.encode_text(PROBE_TEXT).embedding])
        finally:
            self.precision = precision
        return Fingerprint(self.dim, tuple(float(v) for v in probe))
