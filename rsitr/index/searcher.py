"""Ranking: FAISS candidates by global cosine, then (for text queries) a re-rank with local similarity.

Text queries fuse the global cosine with EBAKER's local similarity of the chip's patch tokens and the
query's word tokens (:func:`rsitr.similarity.fuse`), by the weights of the model's scoring recipe (those its training
run used, as evaluation uses them). Image queries rank by global cosine only: the
local similarity is the Frobenius norm of a patch-to-patch cosine matrix, which is largest for chips
whose patches all look alike rather than for the chip that matches the query, so it would push a flat
field above an identical copy of the query image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rsitr.index.archive import Bounds
from rsitr.index.handles import window_text
from rsitr.inference.encoder import EncodedText
from rsitr.index.tiling import Window
from rsitr.models import ScoringRecipe

DEFAULT_RERANK_CANDIDATES = 100


@dataclass(frozen=True)
class SearchHit:
    chip_id: int
    path: str
    """Image path relative to the archive root."""
    window: Window
    bounds: Bounds | None
    """``(left, bottom, right, top)`` in ``crs``; None when the image is not geo-referenced."""
    crs: str | None
    score: float
    """The ranking score: fused global + local similarity when re-ranked, else the global cosine."""
    global_score: float
    local_score: float | None
    stale: bool
    """The source image was deleted, moved or replaced since it was indexed: the chip's vector describes pixels
    that are no longer there (run `rsitr index` to bring the index up to date)."""
    whole_image: bool = False
    """The chip is its whole image (the image was not tiled): its window says nothing the path does not."""
    acquired: str | None = None
    """When its image was acquired (a STAC item's datetime or a TIFF's DATETIME tag), ISO 8601 in UTC."""
    item_id: str | None = None
    """The STAC item its image is an asset of (None: not from STAC)."""
    href: str | None = None
    """The URL of its remote raster (None: a file of the archive's folder)."""

    @property
    def handle(self) -> str:
        """How ``--like`` / ``--positive`` and the API name this chip across re-indexing (ids are an index's own):
        its path, with ``:WxH+X+Y`` for a chip of a tiled scene (:mod:`rsitr.index.handles`)."""
        return self.path if self.whole_image else f"{self.path}:{window_text(self.window)}"

    def to_dict(self) -> dict:
        return {**asdict(self), "handle": self.handle}


class SearchResults(list):
    """The hits of one search in rank order (a list of :class:`SearchHit`), and ``removed``: how many chips
    marked not wanted ranked among them and were left out (the list holds the next ones instead)."""

    def __init__(self, hits=(), removed: int = 0) -> None:
        super().__init__(hits)
        self.removed = removed


def fused_scores(global_scores: np.ndarray, chip_tokens: np.ndarray, query: EncodedText,
                 recipe: ScoringRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Fused and local scores ``[N]`` of ``N`` candidate chips (tokens ``[N, P, D]``) for one text query, fused by
    ``recipe``'s weights (:func:`rsitr.similarity.fuse`).

    The local score is :func:`rsitr.similarity.local_similarity` for one query, computed directly in numpy (the
    cheaper of its two ways for one query, and no torch in a search): the Frobenius norm of the cosines between
    each chip's L2-normalised patch tokens and the query's real word tokens."""
    chips = chip_tokens.astype(np.float32)
    chips = chips / np.maximum(np.linalg.norm(chips, axis=-1, keepdims=True), 1e-12)
    words = query.tokens[query.mask].astype(np.float32)
    words = words / np.maximum(np.linalg.norm(words, axis=-1, keepdims=True), 1e-12)
    local = np.sqrt(np.maximum(np.square(chips @ words.T).sum(axis=(1, 2)), 1e-12)).astype(np.float32)
    fused = recipe.global_weight * global_scores + recipe.local_weight * local
    return fused.astype(np.float32), local


def rank(ids: np.ndarray, global_scores: np.ndarray, k: int, local_scores: np.ndarray | None = None,
         fused: np.ndarray | None = None, unwanted: frozenset[int] = frozenset()
         ) -> tuple[list[tuple[int, float, float, float | None]], int]:
    """The top ``k`` as ``(chip_id, score, global, local)``, by fused score when given, ties broken by id, with
    the ``unwanted`` chip ids left out; and how many unwanted chips ranked among those ``k`` (were removed)."""
    scores = global_scores if fused is None else fused
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), int(ids[i])))
    kept, removed = [], 0
    for i in order:
        if len(kept) == k:
            break
        if int(ids[i]) in unwanted:
            removed += 1
            continue
        kept.append((int(ids[i]), float(scores[i]), float(global_scores[i]),
                     None if local_scores is None else float(local_scores[i])))
    return kept, removed
