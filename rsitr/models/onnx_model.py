"""A model whose two towers run on ONNX Runtime inside the batch encode pipeline (``rsitr embed``, ``classify``, ``eval``).

The image loop (:mod:`rsitr.inference.images`) and the caption encoder (:mod:`rsitr.models.encoding`) load,
preprocess and tokenize with the model's own transforms and tokenizer, in a DataLoader, and call ``model.encode_image`` / ``model.encode_text`` on
tensors. :class:`OnnxRuntimeModel` keeps all of that and swaps only those two forward passes for the export's ONNX
Runtime sessions (tensors in, tensors out), so each command keeps its one pipeline on either runtime; which runtime
is :func:`rsitr.models.onnx_export.runtime_export`'s choice, as for an index.
"""

from __future__ import annotations

import torch
from torch import nn

from rsitr.models.clip import ImageFeatures, TextFeatures
from rsitr.models.factory import LoadedModel
from rsitr.models.onnx_runtime import OnnxTowers


class OnnxRuntimeModel(nn.Module):
    """``model`` (a :class:`~rsitr.models.RetrievalCLIP` or a wrapper with its interface) with ``encode_image`` and
    ``encode_text`` run by ``towers``; every other attribute (tokenizer, preprocessing, masks, logit scale) is the
    model's. Its features come back on the input's device, float32."""

    runtime = "onnx"
    image_cache = None
    """A locked tower's cached feature maps are inputs of the PyTorch tower only: the pipeline reads pixels."""

    def __init__(self, model: nn.Module, towers: OnnxTowers) -> None:
        super().__init__()
        self.inner = model.eval()
        self.towers = towers

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> ImageFeatures:
        global_, tokens = self.towers.image.run(None, {"pixels": pixels.float().cpu().numpy()})
        return ImageFeatures(torch.from_numpy(global_).to(pixels.device), torch.from_numpy(tokens).to(pixels.device))

    @torch.no_grad()
    def encode_text(self, text: torch.Tensor) -> TextFeatures:
        global_, tokens = self.towers.text.run(None, {"ids": text.long().cpu().numpy()})
        return TextFeatures(torch.from_numpy(global_).to(text.device), torch.from_numpy(tokens).to(text.device),
                            self.inner.real_token_mask(text))


def on_runtime(loaded: LoadedModel, device: str = "cpu", precision: str = "auto", runtime: str = "auto") -> nn.Module:
    """``loaded.model`` for the batch pipeline on ``runtime`` (:func:`rsitr.models.onnx_export.runtime_export`):
    itself on PyTorch, an :class:`OnnxRuntimeModel` on ONNX Runtime."""
    from rsitr.models.onnx_export import runtime_export

    directory = runtime_export(loaded, str(device), precision, runtime)
    if directory is None:
        return loaded.model
    model = loaded.model
    return OnnxRuntimeModel(model, OnnxTowers(directory, lambda texts: model.tokenize(texts).numpy()))
