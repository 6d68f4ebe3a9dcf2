"""OpenCLIP wrapped to expose what RSITR methods need: global embeddings *and* local tokens.

EBAKER's local similarity, KER's cross-attention, FTF's fine stage and the search index all need
the projected patch tokens of an image and the projected word tokens of a caption next to the usual
global (cls / eos) embeddings. ``RetrievalCLIP`` returns both from one forward pass of each tower.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from rsitr._compat import open_clip
from rsitr.errors import UserError
from rsitr.models.pretrained import resolve as resolve_pretrained

TINY_MODEL = "rsitr-tiny-ViT"
"""A randomly initialised OpenCLIP ViT of a few MB, shipped as a config, for tests and the demo."""

open_clip.add_model_config(Path(__file__).parent / "configs")


@dataclass
class ImageFeatures:
    """Global embedding ``[B, D]`` and projected patch tokens ``[B, P, D]`` (not normalised)."""

    global_: torch.Tensor
    tokens: torch.Tensor

    def float(self) -> ImageFeatures:
        """The same features in float32 (what scoring uses after a bf16 / fp16 forward pass)."""
        return ImageFeatures(self.global_.float(), self.tokens.float())


@dataclass
class TextFeatures:
    """Global (eos) embedding ``[B, D]``, projected word tokens ``[B, L, D]`` and ``mask`` ``[B, L]``.

    ``mask`` is True on real tokens (start, words, end) and False on the padding after the end token.
    """

    global_: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def float(self) -> TextFeatures:
        """The same features in float32 (what scoring uses after a bf16 / fp16 forward pass)."""
        return TextFeatures(self.global_.float(), self.tokens.float(), self.mask)


class RetrievalCLIP(nn.Module):
    """An OpenCLIP ``CLIP`` model whose towers also return projected local tokens."""

    def __init__(self, clip: nn.Module, tokenizer: Callable, preprocess_train: Callable, preprocess_val: Callable,
                 model_name: str) -> None:
        super().__init__()
        if not hasattr(clip, "visual") or not hasattr(clip, "token_embedding"):
            raise TypeError(f"{model_name}: only OpenCLIP CLIP models with a native text tower are supported")
        self.clip = clip
        self.tokenizer = tokenizer
        self.preprocess_train = preprocess_train
        self.preprocess_val = preprocess_val
        self.model_name = model_name
        self.clip.visual.output_tokens = True

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.clip.vocab_size)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        visual = self.clip.visual
        pooled, tokens = visual(images)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return ImageFeatures(pooled, tokens)

    def text_hidden(self, text: torch.Tensor) -> torch.Tensor:
        """Final-layer-normed hidden states of the text transformer, ``[B, L, width]`` (not projected)."""
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        length = text.shape[1]  # may be shorter than the context: the text tower is causal
        x = clip.token_embedding(text).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=attn_mask)
        return clip.ln_final(x)

    def project_text(self, hidden: torch.Tensor) -> torch.Tensor:
        proj = self.clip.text_projection
        return proj(hidden) if isinstance(proj, nn.Linear) else hidden @ proj

    def encode_text(self, text: torch.Tensor) -> TextFeatures:
        """Encode token ids ``[B, L]`` (from :meth:`tokenize`, full context or trimmed of padding columns)."""
        from open_clip.transformer import text_global_pool

        hidden = self.text_hidden(text)
        pooled = text_global_pool(hidden, text, self.clip.text_pool_type,
                                  eos_token_id=getattr(self.clip, "text_eos_id", None))
        return TextFeatures(self.project_text(pooled), self.project_text(hidden), self.real_token_mask(text))

    def trim(self, text: torch.Tensor) -> torch.Tensor:
        """Token ids cut after the batch's longest real sequence: same features, less work (causal tower)."""
        return text[:, :max(1, int(self.real_token_mask(text).sum(dim=1).max()))]

    def real_token_mask(self, text: torch.Tensor) -> torch.Tensor:
        """True up to and including each sequence's end token (found as the text pooling finds it).

        Not ``text != 0``: id 0 is CLIP's padding but also a real token ("!" inside punctuation runs).
        """
        pool_type, eos_id = self.clip.text_pool_type, getattr(self.clip, "text_eos_id", None)
        if pool_type == "argmax":
            end = text.argmax(dim=-1)
        elif pool_type == "eos" and eos_id is not None:
            end = (text == eos_id).int().argmax(dim=-1)
        else:
            return text != 0
        return torch.arange(text.shape[1], device=text.device).unsqueeze(0) <= end.unsqueeze(1)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[ImageFeatures, TextFeatures]:
        return self.encode_image(images), self.encode_text(text)


def resolve_quick_gelu(model_name: str, pretrained: str | None, requested: bool | None = None) -> bool:
    """Whether the towers use QuickGELU: what the pretrained tag was trained with, unless ``requested`` says.

    OpenAI's CLIP weights (``openai``, and e.g. ``laion400m_e31``) were trained with QuickGELU; built as plain
    ``ViT-B-32`` they load without error but compute a different function (open_clip only logs a warning).
    So a tag decides the activation (``requested=None``) and a request that contradicts the tag, or that asks a
    ``-quickgelu`` architecture for GELU, raises :class:`~rsitr.errors.UserError`. Without a tag (random init,
    a checkpoint file) the architecture's own activation is used unless ``requested`` forces QuickGELU.
    """
    model_config = open_clip.get_model_config(model_name) or {}
    architecture = bool(model_config.get("quick_gelu", False))
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    trained_with = bool(tag.get("quick_gelu", False)) if tag else None
    activation = requested if requested is not None else trained_with if trained_with is not None else architecture
    if architecture and not activation:
        raise UserError(f"{model_name} is a QuickGELU architecture and cannot be built with GELU; use "
                        f"{model_name.removesuffix('-quickgelu')} or leave model.quick_gelu unset")
    if trained_with is not None and activation != trained_with:
        trained, asked = ("QuickGELU", "GELU") if trained_with else ("GELU", "QuickGELU")
        raise UserError(f"the {pretrained!r} weights of {model_name} were trained with {trained}, but "
                        f"model.quick_gelu={requested} asks for {asked}: the model would compute a different "
                        f"function; leave model.quick_gelu unset")
    return activation


def create_retrieval_model(model_name: str | None = TINY_MODEL, pretrained: str | None = None,
                           device: str | torch.device = "cpu", seed: int | None = 0,
                           quick_gelu: bool | None = None) -> RetrievalCLIP:
    """Build a :class:`RetrievalCLIP` the OpenCLIP way.

    ``pretrained`` is an OpenCLIP tag (``openai``, ``laion2b_s34b_b79k`` ...; downloaded by OpenCLIP, so it
    needs the hub or its cache), a tag shipped with rsitr (``rsitr-small-rsicd``; see
    :mod:`rsitr.models.pretrained`; ``model_name`` may then be None) or a local OpenCLIP checkpoint
    file. (Checkpoints of ``rsitr train`` are
    loaded by :func:`rsitr.models.factory.load_model`.) ``seed`` fixes the random initialisation of
    weights that no checkpoint provides. ``quick_gelu``: see :func:`resolve_quick_gelu`; the model's
    ``quick_gelu`` attribute records what was built.
    """
    model_name, pretrained = resolve_pretrained(model_name, pretrained)
    if model_name is None:
        raise UserError(f"no model name for pretrained {pretrained!r}: pass an OpenCLIP model name (--model)")
    if seed is not None:
        torch.manual_seed(seed)
    if pretrained and not Path(pretrained).is_file() and Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"}:
        raise UserError(f"checkpoint {pretrained} does not exist; pass an existing file or an OpenCLIP "
                                f"pretrained tag (see `open_clip.list_pretrained()`)")
    activation = resolve_quick_gelu(model_name, pretrained, quick_gelu)
    try:
        clip, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, force_quick_gelu=activation)
    except RuntimeError as err:
        if "Failed to download" in str(err):
            raise UserError(f"the {pretrained!r} weights of {model_name} are not in the OpenCLIP cache and could "
                            f"not be downloaded; fetch them where there is a connection (or set model.pretrained "
                            f"to a local checkpoint file)") from err
        if model_name in open_clip.list_models():
            raise
        raise UserError(f"unknown OpenCLIP model {model_name!r}; choose one of open_clip.list_models() "
                         f"or {TINY_MODEL!r}") from err
    tokenizer = open_clip.get_tokenizer(model_name)
    model = RetrievalCLIP(clip, tokenizer, preprocess_train, preprocess_val, model_name)
    model.quick_gelu = activation
    return model
