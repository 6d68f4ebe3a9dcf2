"""Exporting a loaded model's towers to ONNX, once per weights, into the cache :mod:`rsitr.models.onnx_runtime` reads.

The image graph is ``encode_image`` (global embedding and projected patch tokens), the text graph ``encode_text``'s
global embedding and projected word tokens, both with dynamic batch (and text length) axes, so that a query runs at
its real length. TorchScript's exporter is used (``dynamo=False``): the two graphs are the model's own forward
passes, it writes one file per tower, and it exports the default model in seconds (the dynamo exporter took 4x
longer on 2 cores, for the same outputs). Where a model does not export (an architecture the exporter cannot
trace), :class:`NotExportableError` says why in one line and the model runs on PyTorch.

An export is written into a temporary folder beside its place and renamed into place whole, so processes exporting
the same weights at once each finish one and the first rename wins; the others' folders are discarded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from rsitr.errors import RsitrWarning, UserError
from rsitr.models.factory import LoadedModel
from rsitr.models.onnx_runtime import (EXPORT_VERSION, IMAGE_FILE, MANIFEST, TEXT_FILE, TOKENIZER_FILE,
                                       choose_runtime, export_key, file_sha256, find_export, onnx_cache_root)

OPSET = 17
CHECK_COSINE = 0.9999
"""How close an export's outputs must be to PyTorch fp32's on inputs of other shapes than the traced ones."""
_EXAMPLE_TEXT = "an aerial image of a harbour with boats"


class NotExportableError(Exception):
    """A model the ONNX export does not cover; the message says why (the model then runs on PyTorch)."""


class _Tower(nn.Module):
    """One tower of ``model`` as a graph: its ``encode`` method (``encode_image`` or ``encode_text``), returning the
    global embedding and the projected tokens."""

    def __init__(self, model: nn.Module, encode: str) -> None:
        super().__init__()
        self.model, self.encode = model, encode

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = getattr(self.model, self.encode)(inputs)
        return features.global_, features.tokens


def runtime_export(loaded: LoadedModel, device: str = "cpu", precision: str = "auto",
                   runtime: str = "auto") -> Path | None:
    """The export folder ``loaded`` runs from on ``runtime`` (:func:`choose_runtime`), exported now on first use; None
    where it runs on PyTorch. The one choice of runtime for every command that encodes: the index's towers
    (:func:`rsitr.inference.encoder.towers_of`) and the batch pipeline's model (:func:`rsitr.models.onnx_model.on_runtime`).
    A model without a weights file to key an export by, or one that does not export, runs on PyTorch under ``auto``
    (the latter with a warning saying why) and is a :class:`~rsitr.errors.UserError` under ``onnx``."""
    if choose_runtime(runtime, str(device), precision) != "onnx":
        return None
    key = export_key(loaded.name, loaded.pretrained)
    if key is None:
        why = f"{loaded.name} has random weights or no weights file to key an ONNX export by"
    else:
        try:
            return exported(loaded, key)
        except NotExportableError as err:
            why = str(err)
    if runtime == "onnx":
        raise UserError(f"`runtime='onnx'`: {why}", parameters=("runtime",))
    if key is not None:
        warnings.warn(f"{why}; it runs on PyTorch", RsitrWarning, stacklevel=3)
    return None


def exported(loaded: LoadedModel, key: str) -> Path:
    """The export folder of ``loaded`` (whose weights ``key`` names): found in the cache, or exported into it now."""
    found = find_export(key)
    if found is not None:
        return found
    root = onnx_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=root))
    try:
        export_towers(loaded, work)
        try:
            os.rename(work, root / key)
        except OSError:  # another process finished the same export first (or a damaged folder is in the way)
            if find_export(key) is None:
                shutil.rmtree(root / key, ignore_errors=True)
                os.rename(work, root / key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root / key


def export_towers(loaded: LoadedModel, directory: Path) -> None:
    """Write ``loaded``'s two towers, its tokenizer (a Hugging Face one) and the manifest into ``directory``.

    Each export runs on a fresh copy of the model (TorchScript's exporter folds batch norms into the convolutions'
    weights in place), and its graph is checked against the model's own outputs on inputs of other shapes."""
    model = loaded.model.eval()
    preprocess = _preprocess_numbers(model)
    mask = _mask_rule(model)
    context = int(model.tokenize([""]).shape[1])
    examples = {IMAGE_FILE: torch.zeros(2, 3, *preprocess["crop"]),
                TEXT_FILE: model.trim(model.tokenize([_EXAMPLE_TEXT, "trees"]))}
    checks = _check_inputs(model, preprocess)
    for name, encode, input_name, axes in ((IMAGE_FILE, "encode_image", "pixels", {0: "batch"}),
                                           (TEXT_FILE, "encode_text", "ids", {0: "batch", 1: "length"})):
        with torch.no_grad():
            expected = _Tower(model, encode)(checks[name])
        errors = []
        for dynamo in (False, True):  # TorchScript's exporter first (faster, one file), then dynamo's
            try:
                _export(_Tower(copy.deepcopy(model), encode), examples[name], directory / name, input_name, axes,
                        dynamo, context)
                _check(directory / name, input_name, checks[name], expected)
                break
            except Exception as err:  # noqa: BLE001 - the exporters raise many types for what they cannot trace
                errors.append(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
        else:
            raise NotExportableError(f"{loaded.name}: its {name[:-5]} tower does not export to ONNX "
                                     f"({'; '.join(errors)})")
    if _backbone(model).hf_text is not None:
        model.tokenizer.tokenizer.backend_tokenizer.save(str(directory / TOKENIZER_FILE))
    manifest = {"version": EXPORT_VERSION, "model": loaded.name, "pretrained": loaded.pretrained,
                "recipe": dataclasses.asdict(loaded.recipe), "dim": int(model.embed_dim),
                "context_length": context, "preprocess": preprocess, "mask": mask,
                "files": {path.name: (path.stat().st_size, file_sha256(path))
                          for path in sorted(directory.iterdir()) if path.name != MANIFEST}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _export(tower: nn.Module, example: torch.Tensor, path: Path, input_name: str, axes: dict, dynamo: bool,
            context: int) -> None:
    kwargs: dict = {"dynamic_axes": {input_name: axes, "global": {0: "batch"}, "tokens": axes}}
    if dynamo:
        dims = {0: torch.export.Dim("batch", min=1)}
        if 1 in axes:
            dims[1] = torch.export.Dim("length", min=1, max=context)
        kwargs = {"dynamic_shapes": (dims,), "external_data": False}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # MultiheadAttention's fused kernel has no ONNX counterpart
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' tracer and deprecation notices
            torch.onnx.export(tower, (example,), str(path), input_names=[input_name],
                              output_names=["global", "tokens"], opset_version=OPSET, dynamo=dynamo,
                              verbose=False, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _check_inputs(model: nn.Module, preprocess: dict) -> dict[str, torch.Tensor]:
    """Inputs of another batch size and length than the examples exported: a graph that fixed a shape fails here."""
    generator = torch.Generator().manual_seed(0)
    texts = ["a harbour with many boats next to a green park and a road", "trees", "two tennis courts"]
    return {IMAGE_FILE: torch.randn(3, 3, *preprocess["crop"], generator=generator),
            TEXT_FILE: model.trim(model.tokenize(texts))}


def _check(path: Path, input_name: str, inputs: torch.Tensor, expected: tuple[torch.Tensor, ...]) -> None:
    """The exported graph's outputs for ``inputs`` against the tower's own (fp32), to :data:`CHECK_COSINE`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: inputs.numpy()})
    for have, reference in zip(got, expected):
        have, reference = torch.from_numpy(have).flatten(0, -2), reference.flatten(0, -2)
        cosine = torch.nn.functional.cosine_similarity(have, reference, dim=-1, eps=1e-12)
        if have.shape != reference.shape or float(cosine.min()) < CHECK_COSINE:
            raise ValueError(f"its ONNX outputs differ from PyTorch's (cosine {float(cosine.min()):.4f})")


def _preprocess_numbers(model: nn.Module) -> dict:
    """``model.preprocess_val`` (OpenCLIP's Resize, CenterCrop, convert, to-tensor, Normalize) as numbers."""
    numbers: dict = {}
    for step in getattr(model.preprocess_val, "transforms", []):
        kind = type(step).__name__
        if kind == "Resize" and (isinstance(step.size, int) or len(step.size) == 1):  # the shorter side's length
            numbers["resize"] = step.size if isinstance(step.size, int) else step.size[0]
            numbers["interpolation"] = step.interpolation.value
        elif kind == "CenterCrop":
            numbers["crop"] = list(step.size)
        elif kind == "Normalize":
            numbers["mean"], numbers["std"] = list(map(float, step.mean)), list(map(float, step.std))
        elif kind not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
            raise NotExportableError(f"its image preprocessing step {kind} has no ONNX Runtime counterpart")
    if set(numbers) != {"resize", "interpolation", "crop", "mean", "std"} or numbers["resize"] < max(numbers["crop"]):
        raise NotExportableError(f"its image preprocessing ({model.preprocess_val}) is not a resize and centre crop")
    return numbers


def _mask_rule(model: nn.Module) -> dict:
    """How :meth:`RetrievalCLIP.real_token_mask` finds the real tokens, as data (see
    :func:`rsitr.models.onnx_runtime.real_token_mask`)."""
    if model.hf_text is not None:
        return {"kind": "not_pad", "pad": model.pad_token_id}
    pool_type, eos = model.clip.text_pool_type, getattr(model.clip, "text_eos_id", None)
    if pool_type == "argmax":
        return {"kind": "through_argmax"}
    if pool_type == "eos" and eos is not None:
        return {"kind": "through_eos", "eos": int(eos)}
    return {"kind": "nonzero"}


def _backbone(model: nn.Module) -> nn.Module:
    """The :class:`~rsitr.models.RetrievalCLIP` of a model (a Focus-Adapter's frozen backbone), which tokenizes."""
    return getattr(model, "backbone", model)
