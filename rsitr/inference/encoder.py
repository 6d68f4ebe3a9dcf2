"""Turning chips and queries into the vectors the index stores, and fingerprinting the model that did it.

Global embeddings are L2-normalised float32, so FAISS inner products are cosines. Local tokens are
L2-normalised too before they are stored as float16 (values in [-1, 1] keep float16 precise), which
:func:`rsitr.similarity.local_similarity` accepts unchanged since it normalises again.

The fingerprint is the embedding dimension plus the global embeddings of a fixed synthetic probe
image and probe caption. Two encoders are compatible when dims match and the probe embeddings agree
to ``PROBE_TOLERANCE``: that catches another model, another checkpoint behind the same path, or
changed weights, while ignoring float noise between machines. The probe is always encoded in fp32, so an
index built in one precision, or on one runtime, opens in another.

The towers run on a runtime (:data:`rsitr.config.RUNTIMES`): ONNX Runtime (:class:`rsitr.models.onnx_runtime.OnnxTowers`, whose
export :meth:`Encoder.load` finds without importing torch) or PyTorch (:class:`rsitr.models.torch_towers.TorchTowers`,
under the encoder's precision, see :mod:`rsitr.models.precision`). Either encodes a query at its real length, not
the tokenizer's whole context. This module imports no torch; the torch runtime imports it when it is chosen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from rsitr.data.augment import ORIENTATION_COUNTS, orient
from rsitr.inference.views import average_views
from rsitr.models.onnx_runtime import TOKENIZER_FILE, OnnxTowers, choose_runtime, export_key, find_export
from rsitr.models.registry import ScoringRecipe

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


class Towers(Protocol):
    """What a runtime's towers do (numpy in and out, float32, not normalised)."""

    runtime: str
    precision: str
    dim: int

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]: ...

    def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _normalize(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def towers_of(loaded, device: str = "cpu", precision: str = "auto", runtime: str = "torch") -> Towers:
    """The towers of ``loaded`` (:func:`rsitr.models.create_model`'s result) on ``runtime``: ONNX Runtime's from the
    export :func:`rsitr.models.onnx_export.runtime_export` picks, else PyTorch's."""
    from rsitr.models.onnx_export import runtime_export

    directory = runtime_export(loaded, str(device), precision, runtime)
    if directory is not None:
        model = loaded.model
        tokenize = None if (directory / TOKENIZER_FILE).is_file() else (lambda t: model.tokenize(t).numpy())
        return OnnxTowers(directory, tokenize)
    from rsitr.models.torch_towers import TorchTowers

    return TorchTowers(loaded.model, device, precision)


class Encoder:
    """A model's towers on a runtime (:func:`towers_of`), with the name and pretrained value it was loaded from and
    its scoring recipe: a model trained with EBAKER's local similarity (or not known not to be) re-ranks text queries
    with it, fused by its own weights; a model trained on the global score alone ranks by its global cosine.

    Built from a loaded model (``Encoder(loaded, device, precision, runtime)``), or by :meth:`load` from the names
    an index records, which finds a cached ONNX export without loading the model (or torch)."""

    def __init__(self, loaded, device: str = "cpu", precision: str = "auto", runtime: str = "torch") -> None:
        self._attach(towers_of(loaded, device, precision, runtime), loaded.name, loaded.pretrained, loaded.recipe)

    def _attach(self, towers: Towers, model_name: str, pretrained: str | None, recipe: ScoringRecipe) -> None:
        self.towers = towers
        self.model = getattr(towers, "model", None)
        """The torch model (PyTorch runtime; None on ONNX Runtime)."""
        self.device = getattr(towers, "device", None)
        self.model_name, self.pretrained, self.recipe = model_name, pretrained, recipe
        self.dim = int(self.encode_text(PROBE_TEXT).embedding.shape[0])

    @property
    def runtime(self) -> str:
        return self.towers.runtime

    @property
    def precision(self) -> str:
        return self.towers.precision

    @classmethod
    def load(cls, model: str | None, pretrained: str | None, *, pretrained_sha256: str | None = None,
             device: str = "cpu", precision: str = "auto", runtime: str = "auto") -> Encoder:
        """The encoder of ``model`` / ``pretrained`` (as :func:`rsitr.models.create_model` takes them): from its
        cached ONNX export without torch where ``runtime`` runs ONNX and the export is there with its own
        tokenizer, else from the loaded model (``pretrained_sha256``: the weights file's, as an index records it)."""
        if choose_runtime(runtime, device, precision) == "onnx":
            directory = find_export(export_key(model, pretrained, pretrained_sha256))
            if directory is not None and (directory / TOKENIZER_FILE).is_file():
                towers = OnnxTowers(directory)
                encoder = cls.__new__(cls)
                manifest = towers.manifest
                located = pretrained and Path(pretrained).is_file()  # where the checkpoint lies now
                encoder._attach(towers, manifest["model"],
                                str(Path(pretrained).resolve()) if located else manifest["pretrained"],
                                ScoringRecipe(**manifest["recipe"]))
                return encoder
        from rsitr.models import create_model

        return cls(create_model(model, pretrained, device=device), device, precision, runtime)

    def encode_images(self, images: Sequence[Image.Image], orientations: int = 1) -> EncodedImages:
        """Unit global embeddings and patch tokens; with ``orientations`` 4 or 8, each global embedding the mean of
        the image's in its 4 rotations (and their mirrors) (:func:`~rsitr.inference.views.average_views`, as
        evaluation averages them); the tokens stay those of the image as given."""
        global_, tokens = average_views(self.towers.encode_images, images, ORIENTATION_COUNTS[orientations],
                                        lambda batch, view: [orient(image, view) for image in batch], _normalize)
        return EncodedImages(_normalize(global_).astype(np.float32), _normalize(tokens).astype(np.float32))

    def encode_text(self, text: str) -> EncodedText:
        """The query's features; ``tokens`` and ``mask`` are as long as its real tokens (no padding)."""
        global_, tokens, mask = self.towers.encode_text(text)
        return EncodedText(_normalize(global_).astype(np.float32), _normalize(tokens).astype(np.float32),
                           np.asarray(mask, dtype=bool))

    def fingerprint(self) -> Fingerprint:
        precision, self.towers.precision = self.towers.precision, "fp32"
        try:
            probe = np.concatenate([self.encode_images([_probe_image()]).embeddings[0],
                                    self.encode_text(PROBE_TEXT).embedding])
        finally:
            self.towers.precision = precision
        return Fingerprint(self.dim, tuple(float(v) for v in probe))
