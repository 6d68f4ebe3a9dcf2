"""KER head (EBAKER's Keyword Explicit Reasoning): predict masked caption tokens from the image.

The architecture follows IRRA's implicit relation reasoning module, which EBAKER's KER reuses: the
masked caption's projected word tokens attend to the image's projected patch tokens in one
cross-attention layer (``cross_former``: LayerNorm on queries and on keys/values, no residual), a
4-block pre-norm transformer contextualises the result, and an MLM head
(``Linear -> QuickGELU -> LayerNorm -> Linear``) scores every vocabulary token at every position.
The masks come from :func:`rsitr.models.keywords.mask_captions`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsitr._compat import open_clip
from rsitr.models.keywords import IGNORE_INDEX


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (``labels != -100``) of ``logits [..., V]``.

    Returns 0, still attached to the graph of ``logits``, when nothing is masked (plain
    ``cross_entropy`` would give NaN), without a device sync to test for that case.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} need labels of shape {tuple(logits.shape[:-1])}, "
                         f"got {tuple(labels.shape)}")
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


class KERHead(nn.Module):
    """Cross-attention of masked text tokens over image tokens, transformer blocks, MLM head.

    ``heads`` is lowered to the largest divisor of ``embed_dim`` not above it (e.g. 8 -> 8 for
    ``D = 32`` or 512, 8 -> 6 for ``D = 30``), so one default fits every model width.
    """

    def __init__(self, embed_dim: int, vocab_size: int, num_blocks: int = 4, heads: int = 8,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if embed_dim < 1 or vocab_size < 1 or num_blocks < 0 or heads < 1:
            raise ValueError(f"KERHead needs positive sizes, got embed_dim={embed_dim}, vocab_size={vocab_size}, "
                             f"num_blocks={num_blocks}, heads={heads}")
        self.heads = max(h for h in range(1, heads + 1) if embed_dim % h == 0)
        self.ln_pre_text = nn.LayerNorm(embed_dim)
        self.ln_pre_image = nn.LayerNorm(embed_dim)
        self.cross_attn = nn.MultiheadAttention(embed_dim, self.heads, batch_first=True)
        block = nn.TransformerEncoderLayer(embed_dim, self.heads, dim_feedforward=int(embed_dim * mlp_ratio),
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, num_blocks, enable_nested_tensor=False)
        self.ln_post = nn.LayerNorm(embed_dim)
        self.mlm_head = nn.Sequential(nn.Linear(embed_dim, embed_dim), open_clip.transformer.QuickGELU(),
                                      nn.LayerNorm(embed_dim), nn.Linear(embed_dim, vocab_size))

    def contextualize(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                      text_mask: torch.Tensor) -> torch.Tensor:
        """Image-aware hidden states ``[B, L, D]`` of the text positions (before the MLM head)."""
        if text_tokens.ndim != 3 or image_tokens.ndim != 3 or text_mask.shape != text_tokens.shape[:2]:
            raise ValueError(f"expected text_tokens [B, L, D], image_tokens [B, P, D], text_mask [B, L]; got "
                             f"{tuple(text_tokens.shape)}, {tuple(image_tokens.shape)}, {tuple(text_mask.shape)}")
        image = self.ln_pre_image(image_tokens)
        x = self.cross_attn(self.ln_pre_text(text_tokens), image, image, need_weights=False)[0]
        x = self.blocks(x, src_key_padding_mask=~text_mask.bool())
        return self.ln_post(x)

    def forward(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits ``[B, L, V]`` for every text position.

        ``text_tokens`` and ``image_tokens`` are the projected tokens of ``RetrievalCLIP.encode_text`` (of
        the masked caption) and ``encode_image``; ``text_mask`` (True on real tokens) keeps padding out of
        the self-attention keys.
        """
        return self.mlm_head(self.contextualize(text_tokens, image_tokens, text_mask))

    def masked_loss(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor, text_mask: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
        """``mlm_loss(self(...), labels)`` computed on the masked positions only.

        Same value, but the ``[B, L, V]`` logits (about 2 GB in fp32 for B = 128, L = 77, V = 49408) are
        never built: only the masked rows go through the MLM head.
        """
        if labels.shape != text_mask.shape:
            raise ValueError(f"labels {tuple(labels.shape)} must match text_mask {tuple(text_mask.shape)}")
        hidden = self.contextualize(text_tokens, image_tokens, text_mask)
        masked = labels != IGNORE_INDEX
        return mlm_loss(self.mlm_head(hidden[masked]), labels[masked])
