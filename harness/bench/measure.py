"""Timing and peak-memory measurement shared by the benchmarks."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from harness.config import ExperimentConfig, load_config
from harness.runtime.checkpoint import load_generator
from models.registry import get_model

GIB = 1024**3


def bench_generator(run_dir: Path | None, preset: str, device: torch.device,
                    model: str | None = None) -> tuple[torch.nn.Module, ExperimentConfig, str]:
    """(generator in eval mode, its config, a description): the EMA generator of a trained run,
    or an untrained `model` (default: the preset's) of `preset`'s config (seeded), whose cost
    is the same."""
    if run_dir is not None:
        loaded = load_generator(run_dir, device)
        return (loaded.generator, loaded.config,
                f"{run_dir} (iteration {loaded.iteration})")
    config = load_config(None, preset, [f"model.name={model}"] if model else [])
    torch.manual_seed(0)
    generator = get_model(config.model.name).build_generator(config.model)
    return (generator.to(device).eval(), config,
            f"untrained {preset}-preset {config.model.name}")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], Any], repeats: int, device: torch.device,
                   warmup: int = 1) -> float:
    """Median wall-clock seconds of `run()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        run()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(runs: dict[str, Callable[[], Any]], repeats: int,
                        device: torch.device, warmup: bool = True) -> dict[str, float]:
    """Median wall-clock seconds of each run, timed in alternation so machine noise hits all
    alike (after one untimed call of each unless `warmup` is False)."""
    return interleaved_clock_medians(runs, repeats, device, warmup)["wall"]


def interleaved_clock_medians(runs: dict[str, Callable[[], Any]], repeats: int,
                              device: torch.device, warmup: bool = True
                              ) -> dict[str, dict[str, float]]:
    """Like `interleaved_medians`, by two clocks read around the same calls: {"wall": wall-clock
    seconds, "cpu": this process's CPU seconds (all its threads; the load other processes put
    on a shared machine leaves it out, and so does the time a GPU works)} -> {run: median}."""
    for run in runs.values() if warmup else ():
        run()
    times: dict[str, dict[str, list[float]]] = {"wall": {name: [] for name in runs},
                                                "cpu": {name: [] for name in runs}}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            sync(device)
            times["wall"][name].append(time.perf_counter() - wall)
            times["cpu"][name].append(time.process_time() - cpu)
    return {clock: {name: statistics.median(values) for name, values in by_run.items()}
            for clock, by_run in times.items()}


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes (Linux).

    VmHWM is this process's own peak; `ru_maxrss` is not used, as a spawned child can report
    its parent's peak there.
    """
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Set this process's VmHWM to its current resident memory (Linux 4.0+: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError as error:
        raise RuntimeError(f"cannot reset the peak resident memory: {error}") from error


def _peak_child(setup: Callable[..., Callable[[], Any]], kwargs: dict[str, Any]) -> int:
    """In a fresh process: build the case and run it once, then the bytes of peak RSS of a
    second run above the resident memory before it. The first run takes one-time costs that
    are not the case's (modules imported on first use: 150 MB for torch's checkpointing)."""
    run = setup(**kwargs)
    run()
    _reset_peak_rss()
    baseline = status_bytes("VmRSS")
    run()
    return status_bytes("VmHWM") - baseline


def peak_memory_bytes(setup: Callable[..., Callable[[], Any]], device: torch.device,
                      **kwargs: Any) -> int:
    """Peak memory one call of the case needs beyond its inputs, after a first call.

    `setup(device=str(device), **kwargs)` (a module-level function) builds the inputs on the
    measured device and returns the call, which runs once before the measured call. On CUDA:
    torch's peak allocated bytes in this process. On CPU: peak resident memory above the
    resident memory before the call, in a fresh spawned process so earlier cases leave no
    trace, with glibc told to map every block of 64 KiB or more on its own
    (MALLOC_MMAP_THRESHOLD_): by default that threshold rises with each large block freed (up
    to 32 MiB), blocks below it come from a heap that keeps freed space resident, and the peak
    then depends on the order of allocations more than on the memory the case holds at once,
    which CUDA's figure counts.
    """
    kwargs = {"device": str(device), **kwargs}
    if device.type == "cuda":
        run = setup(**kwargs)
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _environment(MALLOC_MMAP_THRESHOLD_=str(64 * 1024)), \
            multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_peak_child, (setup, kwargs))


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    """Environment variables set while the block runs (processes started in it inherit them)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def matmul_flops_per_second(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """This machine's dense float32 matrix-multiply throughput (FLOP/s), median of repeats."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = median_seconds(lambda: a @ b, repeats, device)
    return 2 * size**3 / seconds


def copy_bytes_per_second(device: torch.device, size_bytes: int | None = None,
                          repeats: int = 10) -> float:
    """This device's memory bandwidth (bytes/s) as a large copy within it achieves it: bytes
    read plus bytes written (2 * size) over the median time of `dst.copy_(src)`, one GiB on
    CUDA (256 MiB on CPU) unless `size_bytes` is given; the reference for a kernel's achieved
    bandwidth."""
    size = size_bytes or (2**30 if device.type == "cuda" else 2**28)
    source = torch.ones(size // 4, device=device)  # float32
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / median_seconds(lambda: target.copy_(source), repeats, device)
