"""Distributed data parallel set-up from the ``torchrun`` environment, and exact distributed evaluation.

``torchrun`` (or SLURM's ``srun torchrun``) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them
the run is a single process. The backend is NCCL on GPU and gloo on CPU. Evaluation shards the validation
set without padding (:class:`ShardSampler`) and sums counts across ranks, so every sample is counted
exactly once — ``DistributedSampler`` would repeat samples to even out the shards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import SwiftFormerError

# How long a collective waits for the other ranks before failing. A rank that dies closes its connections and
# the others fail at once; this bounds the wait for a rank that hangs (stuck I/O, a stopped process, a lost
# node). It must exceed the longest stretch one rank works alone: rank 0 writing a checkpoint.
DIST_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU if there is one, else CPU; ``cuda`` -> this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SwiftFormerError(f"--device {name!r} is not a device: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SwiftFormerError("--device cuda requested but no GPU is available")
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto", timeout: float = DIST_TIMEOUT_SECONDS) -> DistInfo:
    """Join the process group ``torchrun`` describes (a single process without it).

    Every collective, and the rendezvous itself, raises after ``timeout`` seconds without the other ranks.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=resolved if resolved.type == "cuda" else None,
                                timeout=timedelta(seconds=timeout))
    return DistInfo(rank, world_size, local_rank, resolved)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (itself when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: object) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint shards covering the dataset once, no padding."""

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.dataset_size, self.rank, self.world_size = dataset_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_size, self.world_size))
