"""A frozen text tower's outputs for a corpus, computed once and kept on disk (LiT's locked tower, cached).

With the text tower frozen, each caption's last hidden states never change, so an epoch need not run the
tower at all: :class:`TextFeatureCache` holds them (fp16, each caption at its real length) and
:meth:`RetrievalCLIP.encode_text <rsitr.models.clip.RetrievalCLIP.encode_text>` looks a batch up by its token
ids, falling back to the live tower for any batch it does not fully hold (masked KER captions, scene-augmented
ones). The file is named by a key over the tower's weights, its tokenizer's context length and the captions,
so a cache of another tower or other captions is never reused: it is computed anew beside the old one.

Padding positions are zeros in a cached batch; every score masks them (mean pooling, the local similarity
over real tokens), so cached and live features agree wherever they are used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from rsitr.atomic import write_atomic
from rsitr.paths import cache_folder

CACHE_FORMAT = "rsitr-text-cache-v1"


def cache_dir() -> Path:
    """``$RSITR_CACHE_DIR/text-features``, default ``~/.cache/rsitr/text-features``
    (:func:`~rsitr.paths.cache_folder`)."""
    return cache_folder("text-features")


def tower_fingerprint(model) -> str:
    """SHA-256 over the text tower's weights (names, shapes, values) and its tokenizer's context length."""
    digest = hashlib.sha256(str(getattr(model.tokenizer, "context_length", "")).encode())
    for name, tensor in model.hf_text.transformer.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model, captions: Sequence[str]) -> str:
    digest = hashlib.sha256(tower_fingerprint(model).encode())
    for caption in sorted(set(captions)):
        digest.update(caption.encode("utf-8") + b"\0")
    return digest.hexdigest()


class TextFeatureCache:
    """Last hidden states ``[T, width]`` (fp16) of unique token sequences, found by their real token ids."""

    def __init__(self, ids: torch.Tensor, offsets: torch.Tensor, hidden: torch.Tensor, pad_token_id: int) -> None:
        self.ids, self.offsets, self.hidden, self.pad_token_id = ids, offsets, hidden, pad_token_id
        self._rows = {ids[offsets[i]:offsets[i + 1]].numpy().tobytes(): i for i in range(len(offsets) - 1)}

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, text: torch.Tensor) -> torch.Tensor | None:
        """Float32 hidden states ``[B, L, width]`` for token ids ``[B, L]``, or None unless every row is held."""
        real = text != self.pad_token_id
        lengths = real.sum(dim=1).tolist()
        rows = []
        for row, length in zip(text.to(torch.int32).cpu(), lengths):
            index = self._rows.get(row[:length].numpy().tobytes())
            if index is None:
                return None
            rows.append(index)
        out = torch.zeros(text.shape[0], text.shape[1], self.hidden.shape[1])
        for position, (index, length) in enumerate(zip(rows, lengths)):
            out[position, :length] = self.hidden[self.offsets[index]:self.offsets[index + 1]].float()
        return out.to(text.device)

    @classmethod
    def for_captions(cls, model, captions: Sequence[str], directory: str | Path | None = None,
                     batch_size: int = 256, progress: bool = True) -> TextFeatureCache:
        """The cache of ``model``'s frozen text tower for ``captions``: read from ``directory`` when a file of the
        same key is there, else computed and written there."""
        directory = Path(directory) if directory is not None else cache_dir()
        key = cache_key(model, captions)
        path = directory / f"{key[:32]}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("format") == CACHE_FORMAT and stored.get("key") == key:
                return cls(stored["ids"], stored["offsets"], stored["hidden"], model.pad_token_id)
        cache = cls._compute(model, sorted(set(captions)), batch_size, progress)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"format": CACHE_FORMAT, "key": key, "ids": cache.ids, "offsets": cache.offsets,
                 "hidden": cache.hidden}
        write_atomic(path, lambda temporary: torch.save(state, temporary))
        return cache

    @classmethod
    def _compute(cls, model, captions: list[str], batch_size: int, progress: bool) -> TextFeatureCache:
        tokens = model.tokenize(captions)
        lengths = model.real_token_mask(tokens).sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True).tolist()
        ids, hidden, offsets = [], [], [0]
        # A frozen tower stays in eval mode (RetrievalCLIP.train) and runs without gradients (text_hidden).
        for start in tqdm(range(0, len(order), batch_size), desc="cache text features", disable=not progress,
                          leave=False):
            batch = order[start:start + batch_size]
            batch_ids = tokens[batch, :int(lengths[batch[0]])]
            out = model.text_hidden(batch_ids)
            for row, index in enumerate(batch):
                n = int(lengths[index])
                ids.append(batch_ids[row, :n].to(torch.int32))
                hidden.append(out[row, :n].half())
                offsets.append(offsets[-1] + n)
        return cls(torch.cat(ids), torch.tensor(offsets), torch.cat(hidden), model.pad_token_id)
