"""The encoders on ONNX Runtime: a model's towers exported once (:mod:`rsitr.models.onnx_export`), run without torch.

An export is a folder in ``$RSITR_CACHE_DIR/onnx`` (default ``~/.cache/rsitr/onnx``) named by :func:`export_key`,
the SHA-256 of the weights it was exported from: ``image.onnx`` (pixels ``[B, 3, H, W]`` -> global ``[B, D]`` and
patch tokens ``[B, P, D]``), ``text.onnx`` (token ids ``[B, L]`` -> global ``[B, D]`` and word tokens ``[B, L, D]``),
the tokenizer (``tokenizer.json`` for the ``tokenizers`` package, when the model's text tower is a Hugging Face one)
and ``manifest.json``: the model's name, pretrained value and scoring recipe, the image preprocessing, the real-token
rule and each file's size and SHA-256. The manifest is written last and the folder is renamed into place whole, so
a reader sees a finished export or none; a folder whose files do not match their manifest is damaged and rebuilt.

Nothing here imports torch: with an export in the cache, ``rsitr search`` and ``rsitr serve`` of an index need
only numpy, Pillow, ``onnxruntime`` and ``tokenizers``. The image preprocessing (convert to RGB, resize the shorter
side with Pillow, centre crop, scale, normalise) is OpenCLIP's validation transform, which runs the same Pillow resize.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from rsitr.config import RUNTIMES
from rsitr.errors import UserError
from rsitr.models.hub import file_sha256
from rsitr.paths import cache_folder

EXPORT_VERSION = 1
"""Bumped when what an export holds changes: older folders are then not found (their key differs)."""
MANIFEST = "manifest.json"
IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE = "image.onnx", "text.onnx", "tokenizer.json"
INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


class DamagedExportError(Exception):
    """An export folder whose files are missing, of another size or content than its manifest records."""


def onnx_cache_root() -> Path:
    """``$RSITR_CACHE_DIR/onnx``, default ``~/.cache/rsitr/onnx`` (:func:`~rsitr.paths.cache_folder`)."""
    return cache_folder("onnx")


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_runtime(runtime: str, device: str = "cpu", precision: str = "auto") -> str:
    """``onnx`` or ``torch`` for ``runtime`` (:data:`rsitr.config.RUNTIMES`) on ``device`` at ``precision``.

    ``auto`` is ONNX Runtime wherever it can run the model as asked (fp32 or auto precision; a CPU, or a GPU with its
    CUDA provider). A fixed rule, not a per-CPU probe, because a probe would load the PyTorch model that the
    torch-free search exists to avoid, and ONNX Runtime fp32 out-ran PyTorch at every precision on every CPU measured
    (benchmarks/results/onnx_runtime.json). An ``onnx`` that cannot run as asked is a :class:`UserError` saying why."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return "torch"
    why = None
    if not onnxruntime_available():
        why = "onnxruntime is not installed (pip install onnxruntime)"
    elif precision not in ("auto", "fp32"):
        why = f"ONNX Runtime runs the towers in fp32, not {precision}; pass `precision='fp32'` or `runtime='torch'`"
    elif str(device).startswith("cuda"):
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            why = f"this onnxruntime has no CUDA provider for `device='{device}'` (pip install onnxruntime-gpu)"
    if why is None:
        return "onnx"
    if runtime == "onnx":
        raise UserError(f"`runtime='onnx'`: {why}", parameters=("runtime", "precision", "device"))
    return "torch"


def export_key(model: str | None, pretrained: str | None, pretrained_sha256: str | None = None) -> str | None:
    """The cache key of the export of ``model`` / ``pretrained`` (as :func:`rsitr.models.create_model` takes them):
    the SHA-256 of the export version and the weights' SHA-256 (a shipped tag's recorded one, ``pretrained_sha256``
    as an index records it, or the file's), with the model name where the weights do not name their architecture.
    None where there is no weights file to key by (random weights, an OpenCLIP hub tag, an older shipped entry)."""
    from rsitr.models.checkpoint import run_checkpoint
    from rsitr.models.registry import DEFAULT_PRETRAINED, get_pretrained_cfg, is_pretrained_tag

    if pretrained is None and model is not None and (is_pretrained_tag(model) or Path(model).exists()):
        model, pretrained = None, model
    if model is None and pretrained is None:
        pretrained = DEFAULT_PRETRAINED
    if is_pretrained_tag(pretrained):
        weights, model = get_pretrained_cfg(pretrained).sha256, None  # the tag names its architecture
    else:
        pretrained = run_checkpoint(pretrained)
        weights = pretrained_sha256 or (file_sha256(Path(pretrained)) if pretrained and Path(pretrained).is_file()
                                        else None)
    if weights is None:
        return None
    return hashlib.sha256(f"rsitr-onnx-{EXPORT_VERSION}|{model or ''}|{weights}".encode()).hexdigest()


def find_export(key: str | None) -> Path | None:
    """The finished export folder of ``key`` in the cache, or None (a damaged one is removed, to be rebuilt)."""
    if key is None:
        return None
    directory = onnx_cache_root() / key
    if not (directory / MANIFEST).is_file():
        return None
    try:
        check_export(directory)
    except DamagedExportError:
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return directory


def check_export(directory: Path) -> dict:
    """The manifest of export ``directory`` after checking each file it lists (size and SHA-256)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedExportError(f"{directory}: unreadable manifest ({err})") from None
    for name, (size, digest) in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size or file_sha256(path) != digest:
            raise DamagedExportError(f"{directory}: {name} is missing or not the exported file")
    return manifest


@dataclass(frozen=True)
class Preprocess:
    """OpenCLIP's validation transform as numbers: resize the shorter side to ``resize`` (``interpolation``), centre
    crop to ``crop``, scale to [0, 1], subtract ``mean`` and divide by ``std`` (per channel)."""

    resize: int
    crop: tuple[int, int]
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> np.ndarray:
        """``[3, H, W]`` float32 pixels of ``image``."""
        image = image.convert("RGB")
        width, height = image.size
        short, long = sorted((width, height))
        longer = int(self.resize * long / short)  # torchvision's rounding of the longer side
        size = (self.resize, longer) if width <= height else (longer, self.resize)
        if (width, height) != size:
            image = image.resize(size, INTERPOLATIONS[self.interpolation])
        crop_h, crop_w = self.crop
        left, top = int(round((size[0] - crop_w) / 2.0)), int(round((size[1] - crop_h) / 2.0))
        image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def real_token_mask(ids: np.ndarray, rule: dict) -> np.ndarray:
    """True on the real tokens of ``ids [B, L]``, by the rule an export records (see
    :meth:`rsitr.models.RetrievalCLIP.real_token_mask`, whose rules these are): ``not_pad`` (a Hugging Face
    tokenizer's padding id), ``through_argmax`` / ``through_eos`` (CLIP: up to the end token), ``nonzero``."""
    kind = rule["kind"]
    if kind == "not_pad":
        return ids != rule["pad"]
    if kind == "nonzero":
        return ids != 0
    end = ids.argmax(axis=-1) if kind == "through_argmax" else (ids == rule["eos"]).argmax(axis=-1)
    return np.arange(ids.shape[1])[None, :] <= end[:, None]


class HFTokenizer:
    """A Hugging Face text tower's tokenizer from ``tokenizer.json`` alone: OpenCLIP's ``HFTokenizer`` (whitespace
    cleaning, padded and truncated to the context length) without transformers or torch."""

    def __init__(self, path: Path, context_length: int, pad: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(context_length)
        self.tokenizer.enable_padding(pad_id=pad, length=context_length)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([encoding.ids for encoding in self.tokenizer.encode_batch([_clean(t) for t in texts])],
                          dtype=np.int64)


def _clean(text: str) -> str:
    """OpenCLIP's ``whitespace`` cleaning: ftfy's fixes (where ftfy is installed), HTML entities, one space."""
    import html

    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    return " ".join(html.unescape(html.unescape(text)).split())


class OnnxTowers:
    """A model's two towers on ONNX Runtime (CPU, or CUDA where its provider is installed), numpy in and out.

    ``tokenize`` (texts -> ids ``[B, L]``) is needed only for an export without a ``tokenizer.json`` (CLIP's own
    tokenizer, which lives in open_clip). Pickled as its folder, so that worker processes open their own sessions.
    """

    runtime = "onnx"
    precision = "fp32"

    def __init__(self, directory: Path, tokenize: Callable[[Sequence[str]], np.ndarray] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime

        from rsitr.runtime import cpu_threads

        threads = threads or cpu_threads()
        self.directory = Path(directory)
        self.manifest = check_export(self.directory)
        self._tokenize, self.threads = tokenize, threads
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        self.image = onnxruntime.InferenceSession(str(self.directory / IMAGE_FILE), options, providers=providers)
        self.text = onnxruntime.InferenceSession(str(self.directory / TEXT_FILE), options, providers=providers)
        self.preprocess = Preprocess(**{**self.manifest["preprocess"],
                                        "crop": tuple(self.manifest["preprocess"]["crop"])})
        if self._tokenize is None:
            if TOKENIZER_FILE not in self.manifest["files"]:
                raise UserError(f"the ONNX export {self.directory} has no tokenizer.json; its model's tokenizer is "
                                f"needed (load the model with torch)")
            self._tokenize = HFTokenizer(self.directory / TOKENIZER_FILE, self.manifest["context_length"],
                                         self.manifest["mask"].get("pad", 0))
        self.dim = int(self.manifest["dim"])

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "tokenize": self._tokenize if TOKENIZER_FILE not in
                self.manifest["files"] else None, "threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], state["tokenize"], state["threads"])

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Global embeddings ``[B, D]`` and patch tokens ``[B, P, D]`` (float32, not normalised)."""
        pixels = np.stack([self.preprocess(image) for image in images])
        global_, tokens = self.image.run(None, {"pixels": pixels})
        return global_, tokens

    def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global embedding ``[D]``, word tokens ``[L, D]`` and mask ``[L]`` of one text at its real length."""
        ids = np.asarray(self._tokenize([text]), dtype=np.int64)
        mask = real_token_mask(ids, self.manifest["mask"])
        ids = ids[:, :max(1, int(mask.sum(axis=1).max()))]  # the padding columns change nothing but the time
        global_, tokens = self.text.run(None, {"ids": ids})
        return global_[0], tokens[0], mask[0, :ids.shape[1]]
