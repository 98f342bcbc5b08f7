"""Multi-process data parallelism with torch.distributed (gloo on CPU, nccl on GPU).

Rank and world size come from torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`) or from SLURM
tasks (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`). Gradients are averaged by an
explicit all-reduce after each backward pass (as NVlabs' StyleGAN/EDM code does) rather
than by DDP wrappers, which keeps lazy R1 and the EMA generator simple.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and logs."""
        return self.rank == 0


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "127.0.0.1"


def dist_info_from_env() -> DistInfo:
    """Rank, world size and local rank from torchrun or SLURM variables (1 process if none)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        )
    return DistInfo()


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when there is more than one process; returns this rank's info."""
    info = dist_info_from_env()
    if info.world_size == 1 or dist.is_initialized():
        return info
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = _slurm_master_addr()
    if "MASTER_PORT" not in os.environ:
        job = int(os.environ.get("SLURM_JOB_ID", "0"))
        os.environ["MASTER_PORT"] = str(20000 + job % 20000)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return info


def free_port() -> int:
    """An unused TCP port on localhost (for tests that start several ranks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def average_gradients(module: nn.Module, info: DistInfo) -> None:
    """All-reduce the gradients of `module` to their mean over ranks (one flat buffer)."""
    if info.world_size == 1:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def average_buffers(module: nn.Module, info: DistInfo) -> None:
    """All-reduce floating-point buffers (e.g. the mapping network's w_avg) to their mean."""
    if info.world_size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= info.world_size


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if info.world_size == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def all_ranks_finite(value: torch.Tensor, info: DistInfo) -> bool:
    """True when `value` is finite on every rank."""
    flag = torch.isfinite(value).all().float().reshape(1)
    if info.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)
