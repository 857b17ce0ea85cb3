"""Process-group setup for ``torchrun`` launches: gloo on CPU, NCCL on CUDA; a no-op when run alone."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process(device: str = "auto") -> ProcessInfo:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1)."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size == 1:
        return ProcessInfo(device=target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return ProcessInfo(dist.get_rank(), dist.get_world_size(), target)


def close_process() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
