"""Eliminate Before Align (EBA) from EBAKER, with iEBAKER's joint and independent schemes.

Weakly correlated image-text pairs (captions that barely describe their image) hurt contrastive
alignment. EBA keeps a *similarity bank* with every training pair's similarity seen during an epoch.
At the end of an epoch the bank's threshold is the value at the drop-ratio position of its
descending sort; from epoch ``drop_epoch`` on, each pair at or below the previous epoch's threshold
loses its rows in the batch InfoNCE (image->text and text->image), for the global and the local loss.

Schemes (iEBAKER): ``joint`` lets the global-similarity bank decide for both losses (EBAKER's
original EBA); ``independent`` keeps a second bank of local similarities that decides the local rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SCHEMES = ("joint", "independent")


class SimilarityBank:
    """One similarity value per training pair (indexed by pair id), refreshed as pairs are seen."""

    def __init__(self, num_pairs: int) -> None:
        self.values = torch.full((num_pairs,), math.nan)

    def record(self, pair_ids: torch.Tensor, similarities: torch.Tensor) -> None:
        self.values[pair_ids.cpu()] = similarities.detach().float().cpu()

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
    local_pairs: list[int] = field(default_factory=list)
    global_threshold: float | None = None
    local_threshold: float | None = None


class EliminateBeforeAlign:
    """Decides, batch by batch, which pairs keep their rows in the global and local InfoNCE."""

    def __init__(self, num_pairs: int, drop_epoch: int = 4, drop_ratio: float = 0.01, scheme: str = "joint") -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"EBA scheme must be one of {SCHEMES}, got {scheme!r}")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"drop_ratio must be in [0, 1), got {drop_ratio}")
        self.drop_epoch, self.drop_ratio, self.scheme = drop_epoch, drop_ratio, scheme
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

    def keep(self, pair_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean keep masks ``[B]`` for the global and the local loss rows of a batch."""
        ids = pair_ids.cpu()
        return ~self._drop_global[ids].to(pair_ids.device), ~self._drop_local[ids].to(pair_ids.device)

    def start_epoch(self, epoch: int) -> EpochElimination:
        """Fix the pairs eliminated during ``epoch`` (1-based) from the banks filled in the epoch before."""
        self._drop_global.zero_()
        self._drop_local.zero_()
        report = EpochElimination(epoch)
        if epoch < self.drop_epoch or epoch <= 1:
            return report
        self._drop_global = self.global_bank.below(self.drop_ratio)
        report.global_threshold = self.global_bank.threshold(self.drop_ratio)
        if self.local_bank is None:
            self._drop_local = self._drop_global.clone()
            report.local_threshold = report.global_threshold
        else:
            self._drop_local = self.local_bank.below(self.drop_ratio)
            report.local_threshold = self.local_bank.threshold(self.drop_ratio)
        report.global_pairs = self._drop_global.nonzero().flatten().tolist()
        report.local_pairs = self._drop_local.nonzero().flatten().tolist()
        return report

    def state_dict(self) -> dict:
        return {"global_bank": self.global_bank.state_dict(),
                "local_bank": None if self.local_bank is None else self.local_bank.state_dict(),
                "drop_global": self._drop_global.clone(), "drop_local": self._drop_local.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.global_bank.load_state_dict(state["global_bank"])
        if self.local_bank is not None:
            self.local_bank.load_state_dict(state["local_bank"])
        self._drop_global, self._drop_local = state["drop_global"].clone(), state["drop_local"].clone()
