"""Find all like these: a linear probe fitted on an analyst's marks, run over every chip of the archive.

Search ranks a page; "find all" answers "which chips of the whole archive are like the ones I marked?", with a
count. From the chips marked wanted (at least one), those marked not wanted and a query (text, a chip or an image:
only as a prior), it fits a class-balanced logistic regression (scikit-learn) over the stored unit embeddings:

- positives: the wanted chips;
- negatives: the not-wanted chips, and a seeded random *background* of unmarked chips (an archive is mostly not
  what is sought, so unmarked chips are negatives with a little label noise, as in positive-unlabelled learning).
  The prior says where the wanted chips probably lie: the query refined by the marks (Rocchio,
  :func:`rsitr.index.feedback.rocchio`; the wanted centroid without a query) ranks the archive with the vector
  index, and its best :data:`PRIOR_SHARE` of the chips are left out of the background, so that likely matches
  are not taught as negatives. On the 2,100 UC Merced images this raised the F1 of one round from 0.72 to 0.77
  (benchmarks/find_all.py).

Calibration (Platt scaling): with two or more wanted chips the regression's out-of-fold decision values
(stratified k-fold, ``k = min(5, wanted, negatives)``) are mapped to probabilities by a one-feature logistic regression,
class-balanced as well. A probability is then what the held-out marks say: P(wanted | chip) if wanted and
not-wanted chips were equally common, so 0.5 means even odds and 0.9 nine to one. With a single wanted (or negative)
chip nothing can be held out, and where the held-out marks rank no better than chance (a handful of chips) the mapping
would turn the probe upside down: then the probability is the balanced regression's own (``calibrated`` False).

The archive's odds (:func:`prevalence`): even odds over-return where what is sought is rare (3 + 2 marks on UC
Merced: 116 chips found for the 100 of the scene). The unmarked archive says how rare: the share of wanted chips is
estimated on a uniform sample of it by the EM of Saerens, Latinne and Decaestecker (2002), and a calibrated probe's
bias moves by that share's log-odds, so a probability is P(wanted | chip) in this archive and 0.5 finds the chips
more likely wanted than not (95 found for 100 at 3 + 2 marks, F1 0.898 -> 0.899; 10 + 10: 118 -> 96 found,
F1 0.919 -> 0.953; the default model, benchmarks/results/find_all.json).

Every step is linear in the embedding, so the probe is one weight vector and a bias, and scoring a chip is one dot
product: every chip is scored in streamed batches (:func:`score_batches`), never all vectors in memory at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

DEFAULT_THRESHOLD = 0.5
"""Default probability a chip needs to be found: even odds between wanted and not wanted."""
BACKGROUND = 2000
"""Unmarked chips sampled as background negatives."""
PRIOR_SHARE = 0.05
"""Share of the archive, best by the prior, kept out of the background sample (at most :data:`MAX_PRIOR_EXCLUDED`)."""
MAX_PRIOR_EXCLUDED = 10_000
REGULARISATION = 1.0
"""Inverse L2 strength ``C`` of the probe (scikit-learn's default)."""
MAX_FOLDS = 5
PREVALENCE_SAMPLE = 20_000
"""Chips drawn (seeded, uniformly) from the archive to estimate the share of wanted chips (:func:`prevalence`)."""


@dataclass(frozen=True)
class Probe:
    """``P(wanted | v) = sigmoid(v . weights + bias)`` for a unit chip embedding ``v``."""

    weights: np.ndarray
    bias: float
    calibrated: bool
    wanted: int
    unwanted: int
    background: int
    prevalence: float | None = None
    """The share of wanted chips in the archive that the bias assumes (:func:`prevalence`); None: even odds."""

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return vectors @ self.weights + np.float32(self.bias)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        return expit(self.logits(vectors)).astype(np.float32)


def logit(probability: float) -> float:
    """The decision value at which the probe's probability is ``probability`` (0 < p < 1)."""
    return float(np.log(probability) - np.log1p(-probability))


def fit_probe(wanted: np.ndarray, unwanted: np.ndarray, background: np.ndarray, seed: int = 0) -> Probe:
    """The calibrated probe from wanted ``[N, D]`` (N >= 1), not-wanted ``[M, D]`` and background ``[B, D]`` vectors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if not len(wanted):
        raise ValueError("a probe needs at least one wanted chip")
    negatives = np.concatenate([unwanted, background])
    if not len(negatives):
        raise ValueError("a probe needs negatives: not-wanted or background chips")
    vectors = np.concatenate([wanted, negatives]).astype(np.float32)
    labels = np.concatenate([np.ones(len(wanted), np.int8), np.zeros(len(negatives), np.int8)])
    model = LogisticRegression(C=REGULARISATION, class_weight="balanced", max_iter=2000)
    folds = min(MAX_FOLDS, len(wanted), len(negatives))  # every training fold holds both classes
    scale, shift, calibrated = 1.0, 0.0, folds >= 2
    if calibrated:
        folds = StratifiedKFold(folds, shuffle=True, random_state=seed)
        decisions = cross_val_predict(model, vectors, labels, cv=folds, method="decision_function")
        platt = LogisticRegression(class_weight="balanced").fit(decisions[:, None], labels)
        if platt.coef_[0, 0] > 0:
            scale, shift = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        else:  # held out, the marks rank no better than chance (too few, or an archive of a few chips)
            calibrated = False
    model.fit(vectors, labels)
    return Probe((scale * model.coef_[0]).astype(np.float32), scale * float(model.intercept_[0]) + shift,
                 calibrated, len(wanted), len(unwanted), len(background))


def prevalence(logits: np.ndarray, iterations: int = 500, tolerance: float = 1e-7) -> float:
    """The share of wanted chips among the chips of ``logits`` (a probe's, fitted class-balanced: even odds), by
    the EM of Saerens, Latinne and Decaestecker (2002): adjust the odds to a share, average the adjusted
    probabilities for the next share, until it settles. Capped at 0.5: the probe's own odds."""
    from scipy.special import expit

    share = 0.5
    for _ in range(iterations):
        updated = min(0.5, max(1.0 / (len(logits) + 1), float(expit(logits + logit(share)).mean())))
        if abs(updated - share) < tolerance:
            return updated
        share = updated
    return share


def with_prevalence(probe: Probe, share: float) -> Probe:
    """``probe`` with its odds moved from even to ``share`` (a prior over the archive): P(wanted | chip) there."""
    return dataclasses.replace(probe, bias=probe.bias + logit(share), prevalence=share)


def background_ids(all_ids: np.ndarray, excluded: Iterable[int], count: int = BACKGROUND,
                   seed: int = 0) -> np.ndarray:
    """Up to ``count`` chip ids drawn (seeded) from ``all_ids`` without the ``excluded`` ones, sorted."""
    pool = np.setdiff1d(all_ids, np.fromiter(excluded, np.int64))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, min(count, len(pool)), replace=False))


def prior_excluded(chips: int) -> int:
    """How many of the prior's best chips stay out of the background of an archive of ``chips`` chips."""
    return min(MAX_PRIOR_EXCLUDED, int(round(PRIOR_SHARE * chips)))


@dataclass(frozen=True)
class Found:
    """What "find all" found: chip ids and probabilities, most probable first (ties by id), and the probe."""

    ids: np.ndarray
    probabilities: np.ndarray
    """float64 (see :func:`score_batches`)."""
    threshold: float
    scored: int
    """How many chips were scored (the whole archive)."""
    probe: Probe

    @property
    def count(self) -> int:
        return len(self.ids)


def score_batches(probe: Probe, batches: Iterator[tuple[np.ndarray, np.ndarray]],
                  threshold: float = DEFAULT_THRESHOLD) -> Found:
    """Score every ``(ids [n], vectors [n, D])`` batch and keep the chips whose probability is at least
    ``threshold``, sorted by probability (highest first), ties by id."""
    cut = logit(threshold)
    kept_ids, kept_logits, scored = [], [], 0
    for ids, vectors in batches:
        logits = probe.logits(vectors)
        keep = logits >= cut
        kept_ids.append(np.asarray(ids, np.int64)[keep])
        kept_logits.append(logits[keep])
        scored += len(ids)
    ids = np.concatenate(kept_ids) if kept_ids else np.zeros(0, np.int64)
    logits = np.concatenate(kept_logits) if kept_logits else np.zeros(0, np.float32)
    order = np.lexsort((ids, -logits))
    from scipy.special import expit

    # float64: a probe fitted on a few well-separated marks puts its best chips at logits of 10-30, which float32
    # would all round to 1.0 (no ranking left to show)
    return Found(ids[order], expit(logits[order].astype(np.float64)), threshold, scored, probe)


PROBABILITY_DIGITS = 4
MAX_PROBABILITY_DIGITS = 12


def format_probability(probability: float) -> str:
    """``probability`` with :data:`PROBABILITY_DIGITS` decimals, or, nearer 1 than they show, with as many as
    tell it from 1 and from its neighbours (two significant digits of ``1 - p``, up to
    :data:`MAX_PROBABILITY_DIGITS`): the first page of a find all reads 0.99998, 0.9999962, ..., not 1.0000 each
    (the page's results.js formats alike)."""
    gap = 1.0 - probability
    if gap >= 10.0 ** -PROBABILITY_DIGITS:
        return f"{probability:.{PROBABILITY_DIGITS}f}"
    if gap < 10.0 ** -MAX_PROBABILITY_DIGITS:
        return f">{1 - 10.0 ** -MAX_PROBABILITY_DIGITS:.{MAX_PROBABILITY_DIGITS}f}"
    return f"{probability:.{min(MAX_PROBABILITY_DIGITS, int(np.ceil(-np.log10(gap))) + 1)}f}"
