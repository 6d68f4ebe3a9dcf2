"""OpenCLIP wrapped to expose what RSITR methods need: global embeddings *and* local tokens.

EBAKER's local similarity, KER's cross-attention, FTF's fine stage and the search index all need
the projected patch tokens of an image and the projected word tokens of a caption next to the usual
global (cls / eos) embeddings. ``RetrievalCLIP`` returns both from one forward pass of each tower.


Towers: OpenCLIP's own ViT or a timm CNN (``vision_cfg.timm_model_name``, pooled and projected by a linear
head: its feature map's cells, projected by the same head, are the patch tokens), and OpenCLIP's own text
transformer or a pretrained Hugging Face encoder (``text_cfg.hf_model_name``, mean-pooled word pieces; see
:mod:`rsitr.models.hf_text`). A Hugging Face tower can be locked (``lock_text``): frozen, or all but its
last layers, and a frozen tower's outputs can come from a :class:`~rsitr.models.text_cache.TextFeatureCache`.
Models are built (and loaded) by :func:`rsitr.models.create_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from torch import nn

from rsitr._compat import open_clip
from rsitr.errors import UserError
from rsitr.models.image_towers import trunk_stages


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
    """An OpenCLIP ``CLIP`` (or ``CustomTextCLIP`` with a Hugging Face text tower) whose towers also return
    projected local tokens."""

    def __init__(self, clip: nn.Module, tokenizer: Callable, preprocess_train: Callable, preprocess_val: Callable,
                 model_name: str) -> None:
        super().__init__()
        text = getattr(clip, "text", None)
        if not hasattr(clip, "visual") or (not isinstance(text, open_clip.hf_model.HFTextEncoder)
                                           and not hasattr(clip, "token_embedding")):
            raise TypeError(f"{model_name}: only OpenCLIP CLIP models with a native or Hugging Face text tower "
                            f"are supported")
        visual = clip.visual
        self.timm_visual = isinstance(visual, open_clip.timm_model.TimmModel)
        if self.timm_visual and not (_image_projection(visual) is not None and visual.trunk.num_classes == 0):
            raise TypeError(f"{model_name}: a timm image tower needs timm_pool 'avg' and timm_proj 'linear' or "
                            f"'mlp' (its patch tokens are the projected feature-map cells)")
        self.clip = clip
        self.tokenizer = tokenizer
        self.preprocess_train = preprocess_train
        self.preprocess_val = preprocess_val
        self.model_name = model_name
        self.text_cache = None
        self.text_unlocked_layers: int | None = None  # None: the text tower trains whole
        self.image_unlocked_layers: int | None = None  # None: the image tower trains whole
        self.image_cache = None
        self.image_pretrained = False  # True when the image tower's weights came from its package (image_towers)
        self.quick_gelu = False  # the activation built (factory sets it; a saved config rebuilds the same one)
        if self.timm_visual:
            visual.trunk.to(memory_format=torch.channels_last)  # oneDNN's fast convolution layout on CPU
        else:
            visual.output_tokens = True

    @property
    def hf_text(self) -> nn.Module | None:
        """The Hugging Face text tower (OpenCLIP's ``HFTextEncoder``), or None for CLIP's own text transformer."""
        text = getattr(self.clip, "text", None)
        return text if isinstance(text, open_clip.hf_model.HFTextEncoder) else None

    @property
    def embed_dim(self) -> int:
        if self.hf_text is not None:
            proj = self.hf_text.proj
            return int(proj.out_features if isinstance(proj, nn.Linear) else proj[-1].out_features)
        return int(self.clip.text_projection.shape[-1])

    @property
    def vocab_size(self) -> int:
        if self.hf_text is not None:
            return int(self.hf_text.config.vocab_size)
        return int(self.clip.vocab_size)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    @property
    def pad_token_id(self) -> int:
        return int(self.hf_text.config.pad_token_id) if self.hf_text is not None else 0

    @property
    def text_frozen(self) -> bool:
        """True when the text tower is a Hugging Face encoder locked whole (its outputs can be cached)."""
        return self.hf_text is not None and self.text_unlocked_layers == 0

    def lock_text(self, unlocked_layers: int | None) -> None:
        """Freeze the Hugging Face text tower but its last ``unlocked_layers`` layers (0: all of it; None: train
        it whole). Locked layers stay in eval mode (no dropout), so a frozen tower computes a fixed function."""
        if unlocked_layers is None:
            return
        if self.hf_text is None:
            raise UserError(f"{self.model_name} has no pretrained text tower to lock; model.text_unlocked_layers "
                            f"applies to models with a Hugging Face text tower (text_cfg.hf_model_name)")
        layers = len(self.hf_text.transformer.encoder.layer)
        if not 0 <= unlocked_layers <= layers:
            raise UserError(f"model.text_unlocked_layers must be between 0 and {layers}, got {unlocked_layers}")
        transformer = self.hf_text.transformer
        transformer.requires_grad_(False)
        for layer in list(transformer.encoder.layer)[layers - unlocked_layers:]:
            layer.requires_grad_(True)
        self.text_unlocked_layers = unlocked_layers
        self.train(self.training)

    def lock_image(self, unlocked_layers: int | None) -> None:
        """Freeze a timm EfficientNet image tower but its last ``unlocked_layers`` stages (the head convolution
        counts as one, each block stage as one; 0: all of it; None: train it whole). Locked stages stay in eval
        mode, their batch norms with the pretrained statistics."""
        if unlocked_layers is None:
            return
        if not self.timm_visual:
            raise UserError(f"{self.model_name} has no timm image tower to lock; model.image_unlocked_layers "
                            f"applies to timm EfficientNet towers")
        stages = trunk_stages(self.clip.visual.trunk)
        if not 0 <= unlocked_layers <= len(stages):
            raise UserError(f"model.image_unlocked_layers must be between 0 and {len(stages)}, got {unlocked_layers}")
        self.clip.visual.trunk.requires_grad_(False)
        for stage in stages[len(stages) - unlocked_layers:]:
            stage.requires_grad_(True)
        self.image_unlocked_layers = unlocked_layers
        self.train(self.training)

    @property
    def image_cache_cut(self) -> int:
        """The stage whose input an image feature cache holds: the first unlocked stage, and never later than the
        last block stage (so that one cache serves 0, 1 or 2 unlocked stages)."""
        if self.image_unlocked_layers is None:
            raise ValueError("an image feature cache needs a locked image tower (model.image_unlocked_layers)")
        return len(trunk_stages(self.clip.visual.trunk)) - max(self.image_unlocked_layers, 2)

    def frozen_image_state(self, cut: int) -> dict[str, torch.Tensor]:
        """The weights of the image stages before ``cut`` (what a cache of their output depends on)."""
        return {f"{index}.{name}": tensor for index, stage in enumerate(trunk_stages(self.clip.visual.trunk)[:cut])
                for name, tensor in stage.state_dict().items()}

    def frozen_image_stages(self, images: torch.Tensor, cut: int) -> torch.Tensor:
        """The output of the image stages before ``cut`` for pixels ``[B, 3, H, W]``."""
        x = images.contiguous(memory_format=torch.channels_last)
        for stage in trunk_stages(self.clip.visual.trunk)[:cut]:
            x = stage(x)
        return x

    def attach_image_cache(self, cache) -> None:
        """Let :meth:`encode_image` take ``cache``'s feature maps (:class:`~rsitr.models.image_cache.
        ImageFeatureCache`) in place of pixels; ``None`` detaches it."""
        if cache is not None and cache.cut != self.image_cache_cut:
            raise ValueError(f"the image cache holds stage {cache.cut}'s input, the model needs {self.image_cache_cut}'s")
        self.image_cache = cache

    def train(self, mode: bool = True) -> RetrievalCLIP:
        super().train(mode)
        if self.text_unlocked_layers is not None:
            transformer = self.hf_text.transformer
            layers = list(transformer.encoder.layer)
            transformer.eval()
            for layer in layers[len(layers) - self.text_unlocked_layers:]:
                layer.train(mode)
        if self.image_unlocked_layers is not None:
            stages = trunk_stages(self.clip.visual.trunk)
            self.clip.visual.trunk.eval()
            for stage in stages[len(stages) - self.image_unlocked_layers:]:
                stage.train(mode)
        return self

    def attach_text_cache(self, cache) -> None:
        """Serve the frozen text tower's outputs from ``cache`` (:class:`~rsitr.models.text_cache.TextFeatureCache`)
        where it holds the caption; ``None`` detaches it."""
        if cache is not None and not self.text_frozen:
            raise ValueError("a text feature cache needs a frozen Hugging Face text tower (text_unlocked_layers=0)")
        self.text_cache = cache

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        visual = self.clip.visual
        if self.timm_visual:
            feature_map = self._image_feature_map(images.contiguous(memory_format=torch.channels_last))
            pooled = visual.head(visual.trunk.forward_head(feature_map))
            return ImageFeatures(pooled, _image_projection(visual)(feature_map.flatten(2).transpose(1, 2)))
        pooled, tokens = visual(images)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return ImageFeatures(pooled, tokens)

    def _image_feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's feature map for pixels, or for an attached cache's feature maps (``[B, C, h, w]`` with the
        cache's channels): then only the stages from the cache's cut on run."""
        trunk = self.clip.visual.trunk
        if self.image_cache is None or images.shape[1] != self.image_cache.channels:
            return trunk.forward_features(images)
        x = images
        for stage in trunk_stages(trunk)[self.image_cache.cut:]:
            x = stage(x)
        return x

    def text_hidden(self, text: torch.Tensor) -> torch.Tensor:
        """Last hidden states of the text tower, ``[B, L, width]`` (not projected; layer-normed)."""
        if self.hf_text is not None:
            return self._hf_hidden(text)
        clip = self.clip
        cast_dtype = clip.transformer.get_cast_dtype()
        length = text.shape[1]  # may be shorter than the context: the text tower is causal
        x = clip.token_embedding(text).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
        attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=attn_mask)
        return clip.ln_final(x)

    def _hf_hidden(self, text: torch.Tensor) -> torch.Tensor:
        cached = self.text_cache.lookup(text) if self.text_cache is not None else None
        if cached is not None:
            return cached
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.text_frozen):
            return self.hf_text.transformer(input_ids=text,
                                            attention_mask=self.real_token_mask(text).long()).last_hidden_state

    def project_text(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.hf_text is not None:
            return self.hf_text.proj(hidden)
        proj = self.clip.text_projection
        return proj(hidden) if isinstance(proj, nn.Linear) else hidden @ proj

    def encode_text(self, text: torch.Tensor) -> TextFeatures:
        """Encode token ids ``[B, L]`` (from :meth:`tokenize`, full context or trimmed of padding columns)."""
        hidden = self.text_hidden(text)
        mask = self.real_token_mask(text)
        if self.hf_text is not None:
            pooled = self.hf_text.pooler(SimpleNamespace(last_hidden_state=hidden), mask.long())
        else:
            from open_clip.transformer import text_global_pool

            pooled = text_global_pool(hidden, text, self.clip.text_pool_type,
                                      eos_token_id=getattr(self.clip, "text_eos_id", None))
        return TextFeatures(self.project_text(pooled), self.project_text(hidden), mask)

    def trim(self, text: torch.Tensor) -> torch.Tensor:
        """Token ids cut after the batch's longest real sequence: same features, less work (causal tower, or a
        bidirectional one that masks its padding)."""
        return text[:, :max(1, int(self.real_token_mask(text).sum(dim=1).max()))]

    def real_token_mask(self, text: torch.Tensor) -> torch.Tensor:
        """True up to and including each sequence's end token (found as the text pooling finds it).

        Not ``text != 0`` for CLIP: id 0 is CLIP's padding but also a real token ("!" inside punctuation runs).
        A Hugging Face tokenizer's padding id is never a real token.
        """
        if self.hf_text is not None:
            return text != self.pad_token_id
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


def _image_projection(visual: nn.Module) -> nn.Module | None:
    """A timm tower's projection into the joint space (OpenCLIP's ``timm_proj`` 'linear' or 'mlp'), which maps the
    pooled feature and, cell by cell, the feature map's patch tokens."""
    return getattr(visual.head, "proj", None) or getattr(visual.head, "mlp", None)
