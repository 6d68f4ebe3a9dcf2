"""Eliminate Before Align (EBA) from EBAKER, with iEBAKER's joint and independent schemes.

Weakly correlated image-text pairs (captions that barely describe their image) hurt contrastive
alignment. EBA keeps a *similarity bank* with every training pair's similarity seen during an epoch,
in fp32 whatever precision the model runs in. At the start of an epoch the bank's threshold is the value
at the drop-ratio position of its descending sort; in the eliminating epochs a pair at or below it loses
its rows in the batch InfoNCE (image->text and text->image), for the global and the local loss.

Two settings follow the reference code as an option:

- ``compare``: ``"frozen"`` (rsitr) drops the pairs whose *banked* value (last epoch's) is at or below the
  threshold; ``"live"`` (reference) compares each pair's similarity in the *current* batch with it.
- ``epoch_base``: which epochs eliminate. The trainer counts epochs from 1. With ``epoch_base=1`` (rsitr)
  they are epochs ``drop_epoch ..`` (never the first, whose bank is empty); with ``epoch_base=0``
  (reference, whose loop counts from 0 and eliminates when ``epoch >= drop_epoch``) they are 0-based epochs
  ``drop_epoch ..``: with ``drop_epoch=4`` of 7, the last three.

Schemes (iEBAKER): ``joint`` lets the global-similarity bank decide for both losses (EBAKER's
original EBA); ``independent`` keeps a second bank of local similarities that decides the local rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SCHEMES = ("joint", "independent")
COMPARISONS = ("frozen", "live")


class SimilarityBank:
    """One similarity value per training pair (indexed by pair id), refreshed as pairs are seen."""

    def __init__(self, num_pairs: int) -> None:
        self.values = torch.full((num_pairs,), math.nan)

    def record(self, pair_ids: torch.Tensor, similarities: torch.Tensor) -> None:
        self.values[pair_ids.cpu()] = similarities.detach().float().cpu()  # stays fp32 under AMP

    def threshold(self, drop_ratio: float) -> float | None:
        """Value at position ``n - floor(n * drop_ratio)`` of the descending sort; None if nothing is dropped."""
        seen = self.values[~self.values.isnan()]
        n_drop = math.floor(seen.numel() * drop_ratio)
        if n_drop == 0:
            return None
        descending = seen.sort(descending=True).values
        return float(descending[seen.numel() - n_drop])

    def below(self, drop_ratio: float) -> torch.Tensor:
        """Boolean mask ``[num_pairs]`` of pairs at or below the threshold (unseen pairs never are)."""
        threshold = self.threshold(drop_ratio)
        if threshold is None:
            return torch.zeros_like(self.values, dtype=torch.bool)
        return self.values <= threshold  # NaN compares False

    def state_dict(self) -> dict:
        return {"values": self.values.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.values = state["values"].clone()


@dataclass
class EpochElimination:
    """Pairs whose rows are removed during one epoch (decided by the previous epoch's banks)."""

    epoch: int
    global_pairs: list[int] = field(default_factory=list)
    local_pairs: list[int] = field(default_factory=list)  # frozen comparison only (live decides per batch)
    global_threshold: float | None = None
    local_threshold: float | None = None
    active: bool = False  # whether any row can be eliminated this epoch


class EliminateBeforeAlign:
    """Decides, batch by batch, which pairs keep their rows in the global and local InfoNCE."""

    def __init__(self, num_pairs: int, drop_epoch: int = 4, drop_ratio: float = 0.01, scheme: str = "joint",
                 compare: str = "frozen", epoch_base: int = 1) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"EBA scheme must be one of {SCHEMES}, got {scheme!r}")
        if compare not in COMPARISONS:
            raise ValueError(f"EBA comparison must be one of {COMPARISONS}, got {compare!r}")
        if epoch_base not in (0, 1):
            raise ValueError(f"epoch_base must be 0 or 1, got {epoch_base}")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        self.drop_epoch, self.drop_ratio, self.scheme = drop_epoch, drop_ratio, scheme
        self.compare, self.epoch_base = compare, epoch_base
        self._thresholds: tuple[float | None, float | None] = (None, None)
        self.global_bank = SimilarityBank(num_pairs)
        self.local_bank = SimilarityBank(num_pairs) if scheme == "independent" else None
        self._drop_global = torch.zeros(num_pairs, dtype=torch.bool)
        self._drop_local = torch.zeros(num_pairs, dtype=torch.bool)

    def record(self, pair_ids: torch.Tensor, global_similarity: torch.Tensor,
               local_similarity: torch.Tensor | None = None) -> None:
        """Store the positive pairs' similarities (the diagonals of the batch matrices)."""
        self.global_bank.record(pair_ids, global_similarity)
        if self.local_bank is not None and local_similarity is not None:
            self.local_bank.record(pair_ids, local_similarity)

    def keep(self, pair_ids: torch.Tensor, global_similarity: torch.Tensor | None = None,
             local_similarity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean keep masks ``[B]`` for the global and the local loss rows of a batch.

        The live comparison needs the batch's positive-pair similarities (``global_similarity [B]``, and
        ``local_similarity [B]`` for the independent scheme); the frozen one looks the pairs up.
        """
        if self.compare == "frozen":
            ids = pair_ids.cpu()
            return ~self._drop_global[ids].to(pair_ids.device), ~self._drop_local[ids].to(pair_ids.device)
        if global_similarity is None:
            raise ValueError("live EBA compares the batch's similarities: pass global_similarity")
        global_threshold, local_threshold = self._thresholds
        keep_global = _above(global_similarity, global_threshold)
        if self.local_bank is None:
            return keep_global, keep_global.clone()
        if local_similarity is None:
            raise ValueError("live EBA with the independent scheme also needs local_similarity")
        return keep_global, _above(local_similarity, local_threshold)

    def eliminates_in(self, epoch: int) -> bool:
        """Whether ``epoch`` (counted from 1, as the trainer does) is an eliminating epoch."""
        if self.epoch_base == 0:
            return epoch - 1 >= self.drop_epoch
        return epoch >= self.drop_epoch and epoch > 1

    def start_epoch(self, epoch: int) -> EpochElimination:
        """Fix the thresholds (and, frozen, the pairs) of ``epoch`` (1-based) from the banks of the epoch before."""
        self._drop_global.zero_()
        self._drop_local.zero_()
        self._thresholds = (None, None)
        report = EpochElimination(epoch)
        if not self.eliminates_in(epoch):
            return report
        report.global_threshold = self.global_bank.threshold(self.drop_ratio)
        report.local_threshold = (report.global_threshold if self.local_bank is None
                                  else self.local_bank.threshold(self.drop_ratio))
        self._thresholds = (report.global_threshold, report.local_threshold)
        if self.compare == "live":
            report.active = report.global_threshold is not None or report.local_threshold is not None
            return report
        self._drop_global = self.global_bank.below(self.drop_ratio)
        self._drop_local = self._drop_global.clone() if self.local_bank is None else self.local_bank.below(self.drop_ratio)
        report.global_pairs = self._drop_global.nonzero().flatten().tolist()
        report.local_pairs = self._drop_local.nonzero().flatten().tolist()
        report.active = bool(report.global_pairs or report.local_pairs)
        return report

    def state_dict(self) -> dict:
        return {"global_bank": self.global_bank.state_dict(),
                "local_bank": None if self.local_bank is None else self.local_bank.state_dict(),
                "drop_global": self._drop_global.clone(), "drop_local": self._drop_local.clone(),
                "thresholds": self._thresholds}

    def load_state_dict(self, state: dict) -> None:
        self.global_bank.load_state_dict(state["global_bank"])
        if self.local_bank is not None:
            self.local_bank.load_state_dict(state["local_bank"])
        self._drop_global, self._drop_local = state["drop_global"].clone(), state["drop_local"].clone()
        self._thresholds = tuple(state.get("thresholds", (None, None)))


def _above(similarity: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """True where ``similarity`` (compared in fp32) is above ``threshold``; everything is kept when it is None."""
    if threshold is None:
        return torch.ones_like(similarity, dtype=torch.bool)
    return similarity.detach().float() > threshold
