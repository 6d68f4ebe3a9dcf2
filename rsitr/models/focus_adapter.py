"""CMER's Focus-Adapter: a light side branch trained beside a frozen OpenCLIP backbone.

Memory. The backbone runs under ``torch.no_grad()``: none of its activations is kept for backward and
none of its weights gets a gradient or optimizer state. Forward hooks copy the outputs of a few of its
transformer blocks (``layers`` of them, evenly spaced, the last one always included) out of that pass.
Only the side branch, a few narrow blocks of width ``adapter_dim``, is differentiated.

Side branch (one per tower, same design). Each tapped block output ``[B, T, width]`` is layer-normed and
down-projected to ``adapter_dim``; the side state is built like a ladder,
``h = block_k(h + down_k(tap_k))`` with one small pre-norm transformer block per tap, so deeper taps refine
what shallower ones found.

Focus layer. Small targets (a plane on an apron, a ship in a harbour) cover a few patches; mean or cls
pooling lets the background dominate. The focus layer scores every token ``i`` by its similarity to the
global token plus a learned saliency, ``a_i = q(h_g) . k(h_i) / sqrt(d) + s(h_i)``, and pools the side
tokens with ``softmax(a)`` (padding and, for images, the class token itself excluded), so background
tokens get small weights. The global side feature is ``h_g + sum_i softmax(a)_i h_i``.

Outputs. ``global_ = backbone global + up_g(global side feature)`` and
``tokens = backbone tokens + up_t(h)``. Both up-projections start at zero, so at step 0 the model's
outputs *are* the frozen backbone's (fine-tuning starts from CLIP's zero-shot quality); gradients reach
the rest of the branch from the second step on. The focus weights act on the global embedding only:
EBAKER's local similarity L2-normalises each token, so a magnitude gate on local tokens would change
nothing there; local tokens get the plain side residual.

``logit_scale`` (the backbone's) stays trainable: one scalar, no memory cost.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from rsitr.models.clip import ImageFeatures, RetrievalCLIP, TextFeatures

ADAPTER_HEAD_WIDTH = 64


def tapped_layers(depth: int, layers: int) -> list[int]:
    """``layers`` block indices spread evenly over ``depth`` blocks, ending at the last: (12, 4) -> [2, 5, 8, 11]."""
    if depth < 1 or layers < 1:
        raise ValueError(f"need at least one backbone block and one tapped layer, got depth={depth}, layers={layers}")
    count = min(layers, depth)
    return [round((k + 1) * depth / count) - 1 for k in range(count)]


@contextmanager
def _block_outputs(blocks: nn.ModuleList, indices: Sequence[int], batch_first: bool) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs ``[B, T, width]`` of ``blocks[i]`` for ``i`` in ``indices`` while the context is open."""
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output if batch_first else output.transpose(0, 1))

    handles = [blocks[i].register_forward_hook(keep) for i in indices]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    linear = nn.Linear(in_features, out_features)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class FocusPooling(nn.Module):
    """Pool tokens ``[B, T, d]`` with weights ``softmax(q(query) . k(token) / sqrt(d) + saliency(token))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.saliency = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor, query: torch.Tensor, focus_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled ``[B, d]`` and weights ``[B, T]`` (0 where ``focus_mask [B, T]`` is False)."""
        scores = torch.einsum("bd,btd->bt", self.query(query), self.key(tokens)) / math.sqrt(tokens.shape[-1])
        scores = scores + self.saliency(tokens).squeeze(-1)
        weights = scores.masked_fill(~focus_mask, float("-inf")).softmax(dim=-1)
        return torch.einsum("bt,btd->bd", weights, tokens), weights


class SideBranch(nn.Module):
    """Ladder of down-projected taps and small transformer blocks, focus pooling and zero-initialised outputs."""

    def __init__(self, width: int, embed_dim: int, adapter_dim: int, taps: int) -> None:
        super().__init__()
        heads = max(1, adapter_dim // ADAPTER_HEAD_WIDTH)
        if adapter_dim % heads:
            heads = 1
        self.down = nn.ModuleList([nn.Sequential(nn.LayerNorm(width), nn.Linear(width, adapter_dim)) for _ in range(taps)])
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(adapter_dim, heads, dim_feedforward=2 * adapter_dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(taps)])
        self.focus = FocusPooling(adapter_dim)
        self.global_out = nn.Sequential(nn.LayerNorm(adapter_dim), _zero_linear(adapter_dim, embed_dim))
        self.token_out = nn.Sequential(nn.LayerNorm(adapter_dim), _zero_linear(adapter_dim, embed_dim))

    def forward(self, taps: list[torch.Tensor], global_token: Callable[[torch.Tensor], torch.Tensor],
                focus_mask: torch.Tensor, padding: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals for the global embedding ``[B, D]`` and for every token position ``[B, T, D]``.

        ``global_token`` picks the global token's side state ``[B, d]`` from ``[B, T, d]``; ``focus_mask``
        marks the tokens the focus layer may pool; ``padding [B, T]`` (True on padding) is kept out of attention.
        """
        if len(taps) != len(self.down):
            raise RuntimeError(f"expected {len(self.down)} tapped block outputs, got {len(taps)}")
        side = None
        for tap, down, block in zip(taps, self.down, self.blocks):
            projected = down(tap)
            side = block(projected if side is None else side + projected, src_key_padding_mask=padding)
        query = global_token(side)
        pooled, _ = self.focus(side, query, focus_mask)
        return self.global_out(query + pooled), self.token_out(side)


class FocusAdapterCLIP(nn.Module):
    """A frozen :class:`RetrievalCLIP` plus one Focus-Adapter side branch per tower, with the same interface."""

    def __init__(self, backbone: RetrievalCLIP, adapter_dim: int = 128, layers: int = 4) -> None:
        super().__init__()
        if adapter_dim < 1:
            raise ValueError(f"adapter_dim must be positive, got {adapter_dim}")
        self.backbone = backbone
        backbone.requires_grad_(False)
        backbone.logit_scale.requires_grad_(True)
        backbone.eval()
        clip = backbone.clip
        vision, text = clip.visual.transformer, clip.transformer
        self.vision_taps = tapped_layers(len(vision.resblocks), layers)
        self.text_taps = tapped_layers(len(text.resblocks), layers)
        self.vision_side = SideBranch(vision.width, backbone.embed_dim, adapter_dim, len(self.vision_taps))
        self.text_side = SideBranch(text.width, backbone.embed_dim, adapter_dim, len(self.text_taps))

    # The interface of RetrievalCLIP, delegated to the backbone.
    @property
    def model_name(self) -> str:
        return self.backbone.model_name

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def vocab_size(self) -> int:
        return self.backbone.vocab_size

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.backbone.logit_scale

    @property
    def preprocess_train(self) -> Callable:
        return self.backbone.preprocess_train

    @property
    def preprocess_val(self) -> Callable:
        return self.backbone.preprocess_val

    @property
    def tokenizer(self) -> Callable:
        return self.backbone.tokenizer

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.backbone.tokenize(texts)

    def real_token_mask(self, text: torch.Tensor) -> torch.Tensor:
        return self.backbone.real_token_mask(text)

    def trim(self, text: torch.Tensor) -> torch.Tensor:
        return self.backbone.trim(text)

    def train(self, mode: bool = True) -> FocusAdapterCLIP:
        """Train the side branches; the frozen backbone stays in eval mode (no dropout in what it feeds them)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        transformer = self.backbone.clip.visual.transformer
        with torch.no_grad(), _block_outputs(transformer.resblocks, self.vision_taps, transformer.batch_first) as taps:
            frozen = self.backbone.encode_image(images)
        n_patches = frozen.tokens.shape[1]
        n_tokens = taps[0].shape[1]
        # Tokens before the patches (the class token) are the query, not candidates for focus.
        focus_mask = torch.zeros(n_tokens, dtype=torch.bool, device=images.device)
        focus_mask[n_tokens - n_patches:] = True
        global_delta, token_delta = self.vision_side(taps, lambda side: side[:, 0],
                                                     focus_mask.expand(images.shape[0], -1))
        return ImageFeatures(frozen.global_ + global_delta, frozen.tokens + token_delta[:, n_tokens - n_patches:])

    def encode_text(self, text: torch.Tensor) -> TextFeatures:
        """Encode token ids ``[B, L]`` (from :meth:`tokenize`)."""
        from open_clip.transformer import text_global_pool

        clip = self.backbone.clip
        transformer = clip.transformer
        with torch.no_grad(), _block_outputs(transformer.resblocks, self.text_taps, transformer.batch_first) as taps:
            frozen = self.backbone.encode_text(text)

        def eos_token(side: torch.Tensor) -> torch.Tensor:
            return text_global_pool(side, text, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))

        global_delta, token_delta = self.text_side(taps, eos_token, frozen.mask, padding=~frozen.mask)
        return TextFeatures(frozen.global_ + global_delta, frozen.tokens + token_delta, frozen.mask)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> tuple[ImageFeatures, TextFeatures]:
        return self.encode_image(images), self.encode_text(text)
