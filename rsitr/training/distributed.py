"""torchrun / DistributedDataParallel support: process group setup and feature gathering for InfoNCE."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE > 1``); a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Run the body on rank 0 first and on the other ranks after it (e.g. to write shared files once)."""
    if info.enabled and not info.is_main:
        dist.barrier()
    yield
    if info.enabled and info.is_main:
        dist.barrier()


def gather(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the gradient of this rank's part.

    Contrastive losses need every rank's samples as negatives; ``torch.distributed.nn.all_gather``
    back-propagates into the local slice.
    """
    if not info.enabled:
        return tensor
    if tensor.requires_grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(tensor), dim=0)
    wire = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor  # gloo has no bool all_gather
    parts = [torch.empty_like(wire) for _ in range(info.world_size)]
    dist.all_gather(parts, wire.contiguous())
    return torch.cat(parts, dim=0).to(tensor.dtype)
