"""The studio's latency (harness.studio): what a researcher waits for after moving a slider.

Per model of the zoo, at one preset: a render (image, mask, depth at one pose), a part edit
(the original and the edited portrait in one batch, with the difference map and D_mean), and
inversion seconds per 100 steps (timed over a few steps; the loss and identity network as a
real inversion uses them). An untrained model of the preset costs what a trained one does;
with --run-dir, that run's model instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.bench.measure import bench_generator, median_seconds
from harness.runtime.checkpoint import LoadedGenerator
from harness.studio.engine import Studio
from harness.studio.inversion import (
    InversionSettings,
    Portrait,
    identity_feature,
    invert,
)

TIMED_STEPS = 10  # inversion steps per timed run


def bench_studio(device: torch.device, run_dir: Path | None = None, repeats: int = 3,
                 preset: str = "cpu", models: tuple[str, ...] | None = None
                 ) -> list[dict[str, Any]]:
    """One row per model of the zoo (or of `models`; with `run_dir`, that run's model):
    render_s, edit_s, inversion_s_per_100 (medians of `repeats`)."""
    from models.registry import model_names

    rows = []
    for name in (models or tuple(model_names())) if run_dir is None else (None,):
        generator, config, what = bench_generator(run_dir, preset, device, name)
        generator.requires_grad_(False)  # inversion differentiates the latents only
        studio = Studio(LoadedGenerator(generator, config, 0, Path(what)))
        rows.append({"model": config.model.name, "preset": config.preset, "generator": what,
                     **_latencies(studio, repeats, device)})
    return rows


def _latencies(studio: Studio, repeats: int, device: torch.device) -> dict[str, float]:
    w = studio.latent(0)
    yaw, pitch = studio.poses.frontal
    target = Portrait(studio.render(studio.latent(1), yaw, pitch).raw.cpu(), None)
    phi = identity_feature(studio, None)
    settings = InversionSettings(steps=TIMED_STEPS)
    return {
        "render_s": median_seconds(lambda: studio.render(w, yaw, pitch), repeats, device),
        "edit_s": median_seconds(lambda: studio.edit(w, "hair", "both", 1, yaw, pitch),
                                 repeats, device),
        "inversion_s_per_100": 100 / TIMED_STEPS * median_seconds(
            lambda: invert(studio, target, settings, phi), repeats, device, warmup=0),
    }
