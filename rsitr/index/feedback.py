"""Relevance feedback: move a query vector toward the chips marked wanted and away from those marked not wanted.

Rocchio's formula on unit vectors (the index stores cosine-comparable embeddings)::

    q' = normalize(alpha * q + beta * mean(normalize(wanted)) - gamma * mean(normalize(unwanted)))

with the weights of the SMART system, alpha = 1, beta = 0.75, gamma = 0.15 (Manning, Raghavan and Schütze,
*Introduction to Information Retrieval*, section 9.1.1): what a person marks pulls harder than what they
reject, because a rejected chip says little about where the wanted ones lie. A search with no query of
its own (only marks) uses the wanted centroid alone as the starting point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RocchioWeights:
    alpha: float = 1.0
    """Weight of the original query."""
    beta: float = 0.75
    """Weight of the centroid of the wanted chips."""
    gamma: float = 0.15
    """Weight of the centroid of the unwanted chips (subtracted)."""


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def rocchio(query: np.ndarray | None, wanted: np.ndarray, unwanted: np.ndarray,
            weights: RocchioWeights = RocchioWeights()) -> np.ndarray:
    """The refined unit query ``[D]`` from a query ``[D]`` (or None) and marked chip vectors ``[N, D]``, ``[M, D]``."""
    if query is None and not len(wanted):
        raise ValueError("relevance feedback without a query needs at least one wanted chip")
    dim = wanted.shape[-1] if query is None else query.shape[-1]
    refined = np.zeros(dim, dtype=np.float64)
    if query is not None:
        refined += weights.alpha * _unit(np.asarray(query, dtype=np.float64))
    if len(wanted):
        refined += weights.beta * _unit(np.asarray(wanted, dtype=np.float64)).mean(axis=0)
    if len(unwanted):
        refined -= weights.gamma * _unit(np.asarray(unwanted, dtype=np.float64)).mean(axis=0)
    return _unit(refined).astype(np.float32)
