"""Process-group plumbing for ``torchrun`` (DDP), which degrades to no-ops in a plain single process.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous variables for several nodes); we read only
those, so the same command line works on one CPU, one GPU, or many GPUs on many nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, shows progress bars and writes checkpoints."""
        return self.rank == 0


def setup(device: str = "auto") -> Dist:
    """Join the process group if launched by torchrun (nccl on CUDA, gloo on CPU) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        # Validation and checkpointing on rank 0 can take minutes on CPU: allow for it before a collective fails.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=60),
                                device_id=dev if use_cuda else None)
    return Dist(rank, local_rank, world_size, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Element-wise sum over ranks (the tensor itself on one process)."""
    if ctx.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, ctx: Dist) -> bool:
    """True on every rank if ``flag`` is true on any: ranks must agree to stop at the same step."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()
