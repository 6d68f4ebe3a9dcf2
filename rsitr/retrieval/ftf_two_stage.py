"""FTF fast-then-fine retrieval: a coarse vector search shortlists images, the interaction re-scores them.

Stage 1 (fast) is text-agnostic on the gallery side: every image's global embedding, L2-normalised, goes
into a FAISS inner-product index (``exact``, ``hnsw`` or ``ivf``, built by :mod:`rsitr.retrieval.vector_index`
as the search product builds its own), and each caption's normalised global embedding recalls its top ``K`` images.
Stage 2 (fine) scores only those ``K`` pairs per caption with the fine score

    ``global_weight * cos(global_i, global_t) + interaction_weight * interaction(i, t)``

where ``interaction`` is the parameter-free balanced text-guided interaction of
:mod:`rsitr.retrieval.interaction`. :func:`exhaustive_fine_similarity` is the same fine score on every pair,
the baseline FTF approximates; with ``K`` = gallery size and the exact index both give the same matrix.

The ``[N, M]`` similarity handed to :func:`rsitr.evaluate.recall_metrics`: a caption's candidates hold their
fine scores; every other pair holds its coarse cosine shifted by one constant so that it lies below *every*
fine score in the matrix. Text->image: each caption ranks its shortlist by fine score, then the rest of the
gallery in stage-1 order (what a two-stage system returns). Image->text: an image ranks the captions that
shortlisted it (by fine score) above those that did not (by coarse score); no pair gets a fine score that
stage 2 did not compute. Filling the non-candidate entries needs the dense coarse matrix, which only the
evaluation needs; it is computed outside the timed stages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from rsitr.retrieval.interaction import (DEFAULT_TEMPERATURE, candidate_interaction, interaction_similarity,
                                         prepare_patches)
from rsitr.retrieval.vector_index import INDEX_TYPES, build_vector_index, search_vectors, set_search_breadth
from rsitr.similarity import DEFAULT_CHUNK_BYTES, fuse, global_similarity

DEFAULT_FINE_GLOBAL_WEIGHT = 0.5
DEFAULT_INTERACTION_WEIGHT = 0.5
"""Fine score = equal parts global cosine and interaction, so the global and local views weigh the same."""


@dataclass(frozen=True)
class CoarseIndexConfig:
    """Which FAISS index stage 1 searches, and its accuracy / speed knobs.

    ``hnsw_neighbors`` is HNSW's ``M``; ``hnsw_ef_search`` its search breadth (raised to ``K`` when smaller).
    ``ivf_lists`` defaults to ``4 * sqrt(N)``, capped so each list gets ~39 training points (FAISS's minimum);
    ``ivf_probes`` is how many lists a query visits.
    """

    kind: str = "exact"
    hnsw_neighbors: int = 32
    hnsw_ef_search: int = 128
    ivf_lists: int | None = None
    ivf_probes: int = 16

    def __post_init__(self) -> None:
        if self.kind not in INDEX_TYPES:
            raise ValueError(f"unknown coarse index {self.kind!r}; choose one of {INDEX_TYPES}")


@dataclass
class TwoStageResult:
    """Output of :func:`two_stage_similarity`.

    ``similarity [N, M]`` (see the module docstring for non-candidate entries); ``candidates [M, K]`` the
    image indices stage 1 recalled per caption, best first (``-1`` where an approximate index found fewer
    than ``K``); ``index_seconds`` preparing the gallery: the FAISS index and the normalised patch tokens
    with their Gram matrices (text-agnostic work a deployed system does once, when it indexes the gallery);
    ``stage1_seconds`` / ``stage2_seconds`` the coarse search and the fine re-scoring of all captions.
    """

    similarity: torch.Tensor
    candidates: torch.Tensor
    index_seconds: float
    stage1_seconds: float
    stage2_seconds: float


def _as_faiss_input(embeddings: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(F.normalize(embeddings.detach(), dim=-1).cpu().float().numpy())


def build_coarse_index(image_global: torch.Tensor, config: CoarseIndexConfig = CoarseIndexConfig()) -> faiss.Index:
    """A FAISS inner-product index over the L2-normalised global image embeddings ``[N, D]``, ids = positions."""
    vectors = _as_faiss_input(image_global)
    n = vectors.shape[0]
    lists = config.ivf_lists or max(1, min(round(4 * math.sqrt(n)), n // 39))
    if config.kind == "ivf" and lists > n:
        raise ValueError(f"ivf_lists={lists} exceeds the gallery size {n}; lower ivf_lists")
    index = build_vector_index(vectors, np.arange(n), config.kind, nlist=lists, hnsw_neighbours=config.hnsw_neighbors)
    set_search_breadth(index, nprobe=config.ivf_probes, ef_search=config.hnsw_ef_search)
    return index


def coarse_search(index: faiss.Index, text_global: torch.Tensor, recall_k: int) -> torch.Tensor:
    """Top ``recall_k`` image indices ``[M, K]`` per caption, best first; ``-1`` pads short ANN answers."""
    _, candidates = search_vectors(index, _as_faiss_input(text_global), recall_k)
    return torch.from_numpy(candidates).long()


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done, so stage timings hold on a GPU too."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _check_inputs(image_global: torch.Tensor, image_tokens: torch.Tensor, text_global: torch.Tensor,
                  text_tokens: torch.Tensor) -> None:
    if image_global.dim() != 2 or text_global.dim() != 2:
        raise ValueError(f"expected global embeddings image [N, D] and text [M, D], got "
                         f"{tuple(image_global.shape)} and {tuple(text_global.shape)}")
    if image_tokens.shape[0] != image_global.shape[0] or text_tokens.shape[0] != text_global.shape[0]:
        raise ValueError(f"token batches ({image_tokens.shape[0]} images, {text_tokens.shape[0]} captions) do not "
                         f"match global batches ({image_global.shape[0]} images, {text_global.shape[0]} captions)")
    if image_global.shape[1] != text_global.shape[1]:
        raise ValueError(f"image embeddings have dim {image_global.shape[1]} but text embeddings have dim "
                         f"{text_global.shape[1]}")


@torch.no_grad()
def exhaustive_fine_similarity(image_global: torch.Tensor, image_tokens: torch.Tensor, text_global: torch.Tensor,
                               text_tokens: torch.Tensor, text_mask: torch.Tensor,
                               global_weight: float = DEFAULT_FINE_GLOBAL_WEIGHT,
                               interaction_weight: float = DEFAULT_INTERACTION_WEIGHT,
                               temperature: float = DEFAULT_TEMPERATURE,
                               max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """The fine score ``[N, M]`` of every image-caption pair: FTF's baseline without a shortlist."""
    _check_inputs(image_global, image_tokens, text_global, text_tokens)
    interaction = interaction_similarity(image_tokens, text_tokens, text_mask, temperature, max_chunk_bytes)
    return fuse(global_similarity(image_global, text_global), interaction, global_weight, interaction_weight)


@torch.no_grad()
def two_stage_similarity(image_global: torch.Tensor, image_tokens: torch.Tensor, text_global: torch.Tensor,
                         text_tokens: torch.Tensor, text_mask: torch.Tensor, recall_k: int,
                         index: str | CoarseIndexConfig = "exact",
                         global_weight: float = DEFAULT_FINE_GLOBAL_WEIGHT,
                         interaction_weight: float = DEFAULT_INTERACTION_WEIGHT,
                         temperature: float = DEFAULT_TEMPERATURE,
                         max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> TwoStageResult:
    """FTF text->image retrieval of ``M`` captions over ``N`` images, re-scoring ``recall_k`` candidates each.

    Inputs as :class:`rsitr.models.clip.ImageFeatures` / ``TextFeatures`` hold them: ``image_global [N, D]``,
    ``image_tokens [N, P, D]``, ``text_global [M, D]``, ``text_tokens [M, L, D]``, ``text_mask [M, L]``.
    ``index`` is an index kind (``exact``, ``hnsw``, ``ivf``) or a :class:`CoarseIndexConfig`.
    """
    _check_inputs(image_global, image_tokens, text_global, text_tokens)
    n = image_global.shape[0]
    if text_global.shape[0] == 0:
        raise ValueError("no captions to search: text_global is empty")
    if not 1 <= recall_k <= n:
        raise ValueError(f"recall_k must be between 1 and the gallery size {n}, got {recall_k}")
    config = CoarseIndexConfig(kind=index) if isinstance(index, str) else index

    started = _clock(image_tokens.device)
    coarse_index = build_coarse_index(image_global, config)
    patches = prepare_patches(image_tokens)
    indexed = _clock(image_tokens.device)
    candidates = coarse_search(coarse_index, text_global, recall_k).to(image_tokens.device)
    searched = _clock(image_tokens.device)

    found = candidates >= 0
    shortlist = candidates.clamp_min(0)
    image_unit, text_unit = F.normalize(image_global, dim=-1), F.normalize(text_global, dim=-1)
    candidate_cosine = (image_unit[shortlist] * text_unit.unsqueeze(1)).sum(dim=-1)  # [M, K]
    interaction = candidate_interaction(patches, text_tokens, text_mask, shortlist, temperature, max_chunk_bytes)
    fine = fuse(candidate_cosine, interaction, global_weight, interaction_weight)
    rescored = _clock(image_tokens.device)

    coarse = global_similarity(image_global, text_global)
    lowest_fine = fine[found].min() if bool(found.any()) else coarse.min()
    similarity = coarse - (coarse.max() - lowest_fine + 1.0)
    captions = torch.arange(text_global.shape[0], device=candidates.device).unsqueeze(1).expand_as(candidates)
    similarity[shortlist[found], captions[found]] = fine[found].to(similarity.dtype)
    return TwoStageResult(similarity, candidates, indexed - started, searched - indexed, rescored - searched)
