"""Cost of the zoo's models side by side: training step time, inference speed, peak memory.

`bench_models(presets)` builds every registered model (or the `models` given) at each preset
and measures, per (model, preset):

    train_step_s    median wall time of one training step at the preset's batch size: the
                    training loop's own step (harness.training.step.gan_step: D step, G step
                    with mask consistency and the model's regularisers, EMA update) as after
                    every warm-up, without data loading and without the lazy R1 step (1 in
                    `d_reg_every`); random real pairs stand in for the data
    images_per_s    generator inference (eval mode, no grad, frontal camera) at the same batch
    peak_memory_mb  memory of building the networks and taking one training step, in a
                    fresh process per model: CPU: peak resident set size (`VmHWM`) above
                    the process's size after its imports; CUDA: the peak allocated bytes

The cpu-scale rows time all models in this process, alternating between them over `repeats`
rounds (harness.bench.measure.interleaved_medians), so the load of a shared machine falls on
every model alike; their memory comes from a fresh process per model. A paper row is one
paper-scale step per model in its own subprocess (timed on the second step on CUDA, the first
on CPU): it is heavy (minutes and 10-25 GB per model on a CPU), so leave "paper" out of
`presets` to skip it. A subprocess that fails, is killed (out of memory) or passes
`process_timeout_s` gives a row with `error` set as soon as that is known.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from harness.bench.measure import interleaved_medians, median_seconds, status_bytes, sync
from harness.config import ExperimentConfig, load_config
from harness.runtime.cameras import sample_cameras
from harness.runtime.device import resolve_device
from harness.training.step import Gan, build_gan, gan_step
from models.camera import PITCH_MEAN, YAW_MEAN, intrinsics, look_at_origin
from models.registry import model_names

log = logging.getLogger(__name__)
COLUMNS = ("model", "preset", "device", "batch_size", "train_step_s", "images_per_s",
           "peak_memory_mb", "generator_params_m", "discriminator_params_m", "error")
MB = 2**20


@dataclass
class Setup:
    """One model ready to train: the loop's networks and optimisers, a random real batch."""

    gan: Gan
    real_image: torch.Tensor  # (B, 3, R, R) in [-1, 1]
    real_mask: torch.Tensor  # (B, K, R, R) one-hot in {-1, 1}
    device: torch.device
    rng: torch.Generator  # latents and cameras

    @property
    def config(self) -> ExperimentConfig:
        return self.gan.config


def setup(name: str, preset: str, device: torch.device, overrides: Sequence[str] = ()) -> Setup:
    """Build `name` at `preset` (with `--set` `overrides`) as the training loop does, with a
    random real batch."""
    config = load_config(None, preset, [f"model.name={name}", *overrides])
    batch, size, parts = config.train.batch_size, config.model.resolution, config.model.num_parts
    gan = build_gan(config, device)
    labels = torch.randint(parts, (batch, size, size))
    real_mask = 2 * F.one_hot(labels, parts).permute(0, 3, 1, 2).float() - 1
    return Setup(gan, (torch.rand(batch, 3, size, size) * 2 - 1).to(device), real_mask.to(device),
                 device, torch.Generator().manual_seed(config.train.seed))


def train_step(s: Setup) -> None:
    """One step of the training loop (harness.training.step.gan_step) past every warm-up,
    without the lazy R1 step; the fake cameras come from the pose prior."""
    gan_step(s.gan, s.real_image, s.real_mask, sample_cameras, s.rng, iteration=None,
             regularize=False)


def inference(s: Setup) -> Callable[[], Any]:
    """A call that renders one batch with the EMA generator at the frontal camera."""
    batch = s.config.train.batch_size
    angles = torch.tensor([[YAW_MEAN, PITCH_MEAN]]).expand(batch, 2)
    cam2world = look_at_origin(angles).to(s.device)
    intrinsic = intrinsics().to(s.device).expand(batch, 3, 3)
    with torch.no_grad():
        w = s.gan.generator_ema.sample_latents(batch, generator=s.rng)

    @torch.no_grad()
    def run() -> Any:
        return s.gan.generator_ema(w, cam2world, intrinsic)

    return run


def _row(s: Setup, name: str, preset: str) -> dict[str, Any]:
    def millions(module: nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    return {"model": name, "preset": preset, "device": s.device.type,
            "batch_size": s.config.train.batch_size,
            "generator_params_m": millions(s.gan.generator),
            "discriminator_params_m": millions(s.gan.discriminator), "error": None}


def _fresh_child(name: str, preset: str, device_name: str, results: multiprocessing.Queue,
                 overrides: Sequence[str], steps: int, warmup: int | None) -> None:
    """Subprocess body of a fresh-process row (`fresh_process_row`): build, the untimed and
    timed steps, memory, inference."""
    try:
        device = torch.device(device_name)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = status_bytes("VmHWM")  # after the imports
        s = setup(name, preset, device, overrides)
        warmup = int(device.type == "cuda") if warmup is None else warmup
        step = median_seconds(lambda: train_step(s), repeats=steps, device=device, warmup=warmup)
        if device.type == "cuda":
            memory = torch.cuda.max_memory_allocated(device)
        else:  # this process is fresh: its peak above the imports is the model's
            memory = status_bytes("VmHWM") - before
        images = s.config.train.batch_size / median_seconds(inference(s), 1, device, warmup=0)
        results.put({**_row(s, name, preset), "train_step_s": step, "images_per_s": images,
                     "peak_memory_mb": memory / MB})
    except Exception as error:  # reported in the row; the parent carries on with the others
        results.put({"model": name, "preset": preset, "device": device_name,
                     "error": f"{type(error).__name__}: {error}".splitlines()[0],
                     "traceback": traceback.format_exc()})


def _result_or_none(results: multiprocessing.Queue, process: Any, timeout_s: float
                    ) -> dict[str, Any] | None:
    """The child's row, or None once it has ended without one or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=min(5.0, max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            if not process.is_alive():  # killed (e.g. out of memory) before it could report
                try:
                    return results.get(timeout=1)
                except queue.Empty:
                    return None
    return None


def fresh_process_row(
    name: str,
    preset: str,
    device: torch.device,
    timeout_s: float,
    overrides: Sequence[str] = (),  # `--set` overrides of the config (e.g. a speed switch)
    steps: int = 1,  # timed training steps (median)
    warmup: int | None = None,  # untimed steps before them; None: one on CUDA, none on CPU
) -> dict[str, Any]:
    """One row measured in a fresh process (the paper rows); `error` says why if it fails."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_fresh_child, args=(name, preset, str(device), results,
                                                          tuple(overrides), steps, warmup))
    process.start()
    row = _result_or_none(results, process, timeout_s)
    if row is None:
        process.join(timeout=1)
        why = (f"no result within {timeout_s:.0f} s" if process.exitcode is None
               else "the process ended without a result")
        row = {"model": name, "preset": preset, "device": device.type,
               "error": f"{why} (exit code {process.exitcode}; a negative code means killed, "
                        "e.g. -9 by the out-of-memory killer)"}
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
    if row.get("error"):
        log.warning("%s at the %s preset: %s", name, preset, row["error"])
        log.debug("%s", row.get("traceback", ""))
    row.pop("traceback", None)
    return row


def bench_models(
    presets: Sequence[str] = ("cpu", "paper"),  # a "paper" row is heavy: one step per model
    models: Sequence[str] | None = None,  # registry names; None = every registered model
    repeats: int = 5,  # timed rounds of the cpu-scale rows (after one warm-up round)
    device: str = "auto",  # "auto" (CUDA when present), "cpu", "cuda", ...
    process_timeout_s: float = 3600.0,  # seconds one fresh process (memory, paper) may take
) -> pd.DataFrame:
    """One row per (model, preset) with the columns in `COLUMNS` (see the module docstring)."""
    names = list(models) if models is not None else model_names()
    target = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for preset in presets:
        if preset == "paper":
            rows += [fresh_process_row(name, preset, target, process_timeout_s) for name in names]
            continue
        setups = {name: setup(name, preset, target) for name in names}
        steps = interleaved_medians({name: (lambda s=s: train_step(s))
                                     for name, s in setups.items()}, repeats, target)
        renders = interleaved_medians({name: inference(s) for name, s in setups.items()},
                                      repeats, target)
        for name, s in setups.items():
            fresh = fresh_process_row(name, preset, target, process_timeout_s)
            rows.append({**_row(s, name, preset), "train_step_s": steps[name],
                         "images_per_s": s.config.train.batch_size / renders[name],
                         "peak_memory_mb": fresh.get("peak_memory_mb"),
                         "error": fresh["error"]})
        del setups
        sync(target)
    return pd.DataFrame(rows).reindex(columns=list(COLUMNS))
