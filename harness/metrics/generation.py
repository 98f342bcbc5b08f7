"""Batched generation for the metrics: seeded latents and cameras, renders without autograd.

Every metric draws its latents and its cameras from two separate CPU random streams derived
from (seed, metric name), so a metric's numbers do not depend on which other metrics ran before
it, nor on the batch size: torch's CPU normal sampler transforms its uniforms in blocks of 16,
so cameras (2 numbers each) are drawn for all samples at once, while latents are drawn per
batch (n * z_dim numbers, or n * slots * z_dim with per-slot sampling: a multiple of 16
whenever z_dim is, as in every preset). Evaluation draws latents without style mixing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from harness.config import ExperimentConfig
from harness.runtime import cameras
from harness.runtime.cameras import CameraSampler, sample_cameras
from harness.runtime.samples import view_cameras


@dataclass
class MetricResult:
    """The values of one metric and what it cost."""

    values: dict[str, Any]  # flat metrics.json entries
    num_samples: int  # latents (or latent pairs) measured
    images: int  # images the generator rendered for it
    seconds: float = 0.0  # wall time
    artifacts: dict[str, Any] = field(default_factory=dict)  # per-sample tables, maps, ...


@dataclass
class MetricContext:
    """What a registered metric's `run` gets (harness.metrics.registry)."""

    generator: torch.nn.Module
    config: ExperimentConfig
    count: int  # samples to measure
    seed: int  # of the metric's latent and camera streams
    extractor: tuple[str, Any] | None = None  # FID/KID feature extractor name and weights
    embedder: Any = None  # identity embedder (harness.metrics.identity.Embedder)


def streams(seed: int, metric: str) -> tuple[torch.Generator, torch.Generator]:
    """Two independent CPU random streams (latents, cameras) of one metric."""
    key = (seed * 1_000_003 + zlib.crc32(metric.encode())) * 2
    return torch.Generator().manual_seed(key % 2**63), torch.Generator().manual_seed(
        (key + 1) % 2**63)


def batches(count: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most `batch_size` that cover `count` items."""
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def take(cameras: tuple[torch.Tensor, torch.Tensor], part: slice
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The cameras (cam2world, intrinsics) of one batch."""
    return cameras[0][part], cameras[1][part]


def device_of(generator: torch.nn.Module) -> torch.device:
    """The device holding the generator's weights."""
    return next(generator.parameters()).device


def latents(generator: torch.nn.Module, n: int, stream: torch.Generator) -> torch.Tensor:
    """(n, S, w_dim) W+ latents at truncation 1, on the generator's device."""
    with torch.inference_mode():
        return generator.sample_latents(n, generator=stream)


def latent_pairs(generator: torch.nn.Module, n: int, stream: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent (n, S, w_dim) latent sets; sample i's pair is the same at any batching."""
    w = latents(generator, 2 * n, stream)
    return w[0::2], w[1::2]


def prior_cameras(n: int, stream: torch.Generator, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras from the paper's pose prior (the training distribution)."""
    return sample_cameras(n, stream, device)


def prior_camera_pairs(n: int, stream: torch.Generator, device: torch.device
                       ) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Two independent prior camera sets ((cam2world, intrinsics) each), batching-invariant."""
    cam2world, intrinsic = prior_cameras(2 * n, stream, device)
    return (cam2world[0::2], intrinsic[0::2]), (cam2world[1::2], intrinsic[1::2])


def frontal_cameras(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The frontal camera (yaw = pitch = pi/2), n times."""
    cam2world, intrinsic = view_cameras(device)
    return cam2world[1:2].expand(n, 4, 4), intrinsic[1:2].expand(n, 3, 3)


def camera_sampler(config: ExperimentConfig) -> CameraSampler:
    """The FID/KID camera source of `config.evaluate.cameras`: "prior" or "dataset"."""
    return cameras.camera_sampler(config.evaluate.cameras, config)


def render(generator: torch.nn.Module, w: torch.Tensor, cam2world: torch.Tensor,
           intrinsic: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generator's outputs for latents `w` at cameras, with no autograd bookkeeping."""
    with torch.inference_mode():
        return generator(w, cam2world, intrinsic)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> uint8 in [0, 255] (what torch-fidelity expects)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def labels(mask: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) class scores -> (N, H, W) class ids (argmax)."""
    return mask.argmax(1)


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) by area averaging (a no-op at that size)."""
    return x if x.shape[-1] == size else F.interpolate(x.float(), size=(size, size), mode="area")


def keep_freed_memory() -> None:
    """Make glibc keep freed blocks in the process instead of handing them back to the OS.

    By default every freed block above glibc's (dynamic) mmap threshold goes back to the OS,
    so each render's large temporaries are page-faulted in again: at the cpu preset that was
    half the CPU time of generation (27 vs 14 CPU-ms per image, single thread). A fixed
    32 MiB mmap threshold (glibc's maximum) and a 2 GiB trim threshold stop that. The setting
    is process-wide; elsewhere than glibc this does nothing.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter ids, <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


class Stopwatch:
    """Wall time of a block, synchronising CUDA so queued kernels are counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
