"""One cell on several processes (``torchrun``): the rank, the process group and the few collectives the
harness needs. In a single process every helper here is a no-op, so the rest of the code calls them freely.

What is split across ranks, and what is not: training batches (each rank a disjoint slice of every global
batch: ``batch_size`` is the global batch, ``batch_size / ranks`` images per rank per step, and the learning
rate is the global batch's), and evaluation (each rank scores a contiguous part of the split; the logits are
gathered so every rank computes the same metrics). Everything else (the linear probe's head fit on gathered
features, BatchNorm re-estimation) runs whole on every rank, identically.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes models, records and logs."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (parts differ in size by at most one)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)


WHOLE = Shard()


def launched_shard() -> Shard:
    """The shard torchrun (or any launcher setting RANK and WORLD_SIZE) gave this process."""
    return Shard(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def init_process_group(device_type: str) -> Shard:
    """Joins the launcher's process group: NCCL on CUDA (one GPU per local rank), gloo on CPU."""
    import torch.distributed as dist

    shard = launched_shard()
    if shard.world > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=dt.timedelta(minutes=30))
    return shard


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_cat(tensor: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every rank's ``tensor`` (parts of different lengths allowed), concatenated in rank order, on every rank."""
    if shard.world == 1:
        return tensor
    import torch.distributed as dist

    parts: list[Any] = [None] * shard.world
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts).to(tensor.device)


def mean_over_ranks(value: torch.Tensor, shard: Shard) -> torch.Tensor:
    if shard.world == 1:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / shard.world


def broadcast(obj: Any, shard: Shard) -> Any:
    """Rank 0's ``obj`` on every rank: how ranks agree on a decision only rank 0 can make."""
    if shard.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_on_all_ranks(value: Any, shard: Shard) -> bool:
    """Whether every rank holds an equal ``value`` (True in a single process)."""
    if shard.world == 1:
        return True
    import torch.distributed as dist

    values: list[Any] = [None] * shard.world
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def barrier(shard: Shard) -> None:
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()
