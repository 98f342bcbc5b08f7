"""What makes the same command give the same numbers: the CPU thread count and deterministic
algorithms (`train.threads`, `train.deterministic`), applied by training and evaluation alike,
and the machine, which runs record (`machine`)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def apply_reproducibility(threads: int, deterministic: bool) -> None:
    """Use `threads` CPU threads and, if `deterministic`, torch's deterministic algorithms
    without cuDNN autotuning (CPU runs are deterministic at a fixed thread count without it)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement


def machine(device: torch.device | str = "cpu") -> str:
    """What float results depend on besides the code, config and thread count: torch's version
    and the processor (a CPU's vector instructions and model, or the GPU's name). Runs of the
    same config and seed on two such machines give different numbers (docs/results.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"torch {torch.__version__}, CUDA {torch.cuda.get_device_name(device)}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {model}"
