"""Training-step benchmark: one paper-scale step (seconds, peak resident memory) and the cpu
preset's iterations per second with a profile of where the time goes."""

from __future__ import annotations

import json
import math
import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.bench.measure import GIB, status_bytes
from harness.config import load_config
from harness.data.classes import NUM_CLASSES
from harness.data.prepared import PreparedWriter
from harness.training.loop import training_loop
from models.camera import intrinsics, look_at_origin

GB = 1e9


def _train_in_child(preset: str, run_dir: str, overrides: list[str]) -> dict[str, Any]:
    """Train in this (fresh) process; its peak RSS and the last metrics line."""
    config = load_config(None, preset, overrides)
    training_loop(config, run_dir, progress=False)
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return {"peak_rss_bytes": status_bytes("VmHWM"),
            "last": json.loads(lines[-1])}


def train_in_fresh_process(preset: str, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train a run in a spawned process, so its peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_train_in_child, (preset, str(run_dir), overrides))


def write_random_prepared(out_dir: Path, resolution: int, count: int = 8) -> Path:
    """A prepared dataset of `count` random images and masks at `resolution` (frontal
    cameras): stand-in data for timing, as a step's cost does not depend on the pixels."""
    gen = np.random.default_rng(0)
    angles = torch.full((count, 2), math.pi / 2)
    writer = PreparedWriter(out_dir, count, resolution, "random", {"seed": 0}, has_depth=False)
    writer.write(
        0, images=gen.integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8),
        masks=gen.integers(0, NUM_CLASSES, (count, resolution, resolution), dtype=np.uint8),
        angles=angles.numpy(), cameras=look_at_origin(angles).numpy(),
        intrinsics=intrinsics().expand(count, 3, 3).numpy(),
        identity=np.arange(count), split=np.zeros(count, dtype=np.uint8))
    writer.finalize()
    return out_dir


def bench_paper_step(device: torch.device, batch: int = 4) -> dict[str, Any]:
    """One paper-preset training iteration (D step with lazy R1, G step) at `batch`.

    Trains on random 512x512 stand-in data (`write_random_prepared`). The peak is the whole
    process's resident memory (like `/usr/bin/time -v`), model, optimizers and data included.
    """
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        data = write_random_prepared(Path(tmp) / "data", resolution=512)
        result = train_in_fresh_process("paper", Path(tmp) / "run", [
            "train.iterations=1", f"train.batch_size={batch}", "data.source=celebamask-hq",
            f"data.path={data}", f"train.device={device}",
        ])
    return {"batch": batch, "step_s": 1.0 / result["last"]["train/it_per_s"],
            "peak_gb": result["peak_rss_bytes"] / GB,
            "peak_gib": result["peak_rss_bytes"] / GIB}


def bench_cpu_preset(device: torch.device, iterations: int = 30,
                     profile_iterations: int = 6, top: int = 8) -> dict[str, Any]:
    """Iterations per second of the cpu preset (after start-up) and its top operators."""
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        config = load_config(None, "cpu", [f"train.iterations={iterations}",
                                           f"train.log_every={iterations}",
                                           f"train.sample_every={iterations}",
                                           f"train.device={device}"])
        training_loop(config, Path(tmp) / "run", progress=False)
        status = json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
        profiled = config.model_copy(update={"train": config.train.model_copy(
            update={"iterations": profile_iterations})})
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            training_loop(profiled, Path(tmp) / "profiled", progress=False)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {
        "it_per_s": status["train/it_per_s"],
        "profile": [{"op": e.key, "self_cpu_fraction": e.self_cpu_time_total / total}
                    for e in events[:top]],
    }
