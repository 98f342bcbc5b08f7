"""What makes the same command give the same numbers: the CPU thread count and deterministic
algorithms (`train.threads`, `train.deterministic`), applied by training and evaluation alike."""

from __future__ import annotations

import os

import torch


def apply_reproducibility(threads: int, deterministic: bool) -> None:
    """Use `threads` CPU threads and, if `deterministic`, torch's deterministic algorithms
    without cuDNN autotuning (CPU runs are deterministic at a fixed thread count without it)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement
