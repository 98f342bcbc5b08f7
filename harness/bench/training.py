"""Training-step benchmark: paper-scale steps (seconds, peak memory of the device they ran on),
the cpu preset's iterations per second with a profile of where the time goes, and on CUDA the
GPU speed switches (harness.training.speed) against the default step, and a profiler trace of
one step."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.bench.measure import GIB, status_bytes, sync
from harness.bench.models import MB, fresh_process_row, setup, train_step
from harness.config import load_config
from harness.data.classes import NUM_CLASSES
from harness.data.prepared import PreparedWriter
from harness.training.loop import training_loop
from models.camera import intrinsics, look_at_origin

log = logging.getLogger(__name__)
GB = 1e9
# `--set` overrides of each GPU speed switch (train.*, docs/training.md#gpu-speed-switches)
SWITCHES: dict[str, list[str]] = {
    "bf16": ["train.precision=bf16"],
    "compile": ["train.compile=[render_net, discriminator]"],
    "channels_last": ["train.channels_last=true"],
}


def _train_in_child(preset: str, run_dir: str, overrides: list[str]) -> dict[str, Any]:
    """Train in this (fresh) process: its peak RSS, the peak CUDA memory reserved by torch's
    allocator (None without CUDA) and the metrics lines."""
    config = load_config(None, preset, overrides)
    training_loop(config, run_dir, progress=False)
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    cuda = torch.cuda.max_memory_reserved() if torch.cuda.is_initialized() else None
    return {"peak_rss_bytes": status_bytes("VmHWM"), "peak_cuda_bytes": cuda,
            "metrics": [json.loads(line) for line in lines]}


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


def bench_paper_step(device: torch.device, batch: int = 4, preset: str = "paper"
                     ) -> dict[str, Any]:
    """Two training iterations of `preset` (the tests use `smoke`) at `batch` on random
    stand-in data at the preset's resolution (`write_random_prepared`).

    `first_step_s` is the first iteration (D step with lazy R1, G step; with one-time start-up
    costs such as CUDA's kernel selection), `step_s` the second (no R1). `peak_gb` is the peak
    of the device the steps ran on: the process's resident memory on CPU (like
    `/usr/bin/time -v`: model, optimizers and data included), the memory torch's CUDA allocator
    reserved on a GPU (what the card must hold). `host_peak_gb` is the resident memory always.
    """
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        resolution = load_config(None, preset, []).model.resolution
        data = write_random_prepared(Path(tmp) / "data", resolution=resolution)
        result = train_in_fresh_process(preset, Path(tmp) / "run", [
            "train.iterations=2", "train.log_every=1", f"train.batch_size={batch}",
            "data.source=celebamask-hq", f"data.path={data}", f"train.device={device}",
        ])
    first, second = result["metrics"][:2]
    peak = result["peak_cuda_bytes"] or result["peak_rss_bytes"]
    return {"batch": batch, "device": device.type, "first_step_s": 1.0 / first["train/it_per_s"],
            "step_s": second["time"] - first["time"], "peak_gb": peak / GB,
            "peak_gib": peak / GIB, "host_peak_gb": result["peak_rss_bytes"] / GB}


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


def bench_switches(device: torch.device, preset: str = "paper", compile_mode: str = "default",
                   switches: Sequence[str] = tuple(SWITCHES), steps: int = 3, warmup: int = 3,
                   timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """3D-SSGAN's training step at `preset` with each of `switches` (names of `SWITCHES`;
    compile in `compile_mode`) against the default step: one row each, measured in a fresh
    process (harness.bench.models.fresh_process_row: the loop's step without the lazy R1,
    random real pairs, median of `steps` after `warmup` untimed steps, which take the
    compilation and CUDA graphs' recording). `speedup` is the default's step time over the
    switch's, `peak_gb` the peak memory allocated on the device (build and steps); a row whose
    process fails or passes `timeout_s` says so in `error`."""
    rows = []
    for switch, overrides in {"default": [], **{name: SWITCHES[name] for name in switches}}.items():
        if switch == "compile":
            overrides = [*overrides, f"train.compile_mode={compile_mode}"]
        row = fresh_process_row("3dssgan", preset, device, timeout_s, overrides, steps, warmup)
        rows.append({"switch": switch, "preset": preset, "step_s": row.get("train_step_s"),
                     "peak_gb": (row.get("peak_memory_mb") or math.nan) * MB / GB,
                     "error": row["error"]})
        log.info("speed switch %s at the %s preset: %s", switch, preset, rows[-1])
    default = rows[0]["step_s"]
    for row in rows:
        row["speedup"] = default / row["step_s"] if default and row["step_s"] else math.nan
    return rows


def trace_train_step(device: torch.device, path: Path, preset: str = "paper",
                     warmup: int = 2, top: int = 12) -> list[dict[str, Any]]:
    """Write a torch.profiler Chrome trace (open it in chrome://tracing or Perfetto) of one
    training step of 3D-SSGAN at `preset`, the step `bench_switches` times, after `warmup`
    steps, to `path`; its `top` operators by self time on the device (CUDA kernels on a GPU,
    CPU otherwise)."""
    s = setup("3dssgan", preset, device)
    for _ in range(warmup):
        train_step(s)
    sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        train_step(s)
        sync(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))

    def self_time(event: Any) -> float:
        return event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total

    events = sorted(prof.key_averages(), key=self_time, reverse=True)
    total = sum(self_time(e) for e in events) or 1.0
    return [{"op": e.key, "self_ms": self_time(e) / 1e3, "fraction": self_time(e) / total}
            for e in events[:top]]
