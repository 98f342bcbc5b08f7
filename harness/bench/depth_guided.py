"""Depth-guided test-time sampling against the uniform 36-sample render (issue: SemanticHuman-HD).

Side by side on the same latents and cameras: speed-up of the renderer stage (lifting and
volume rendering, the part the sampling changes) and of the whole generator, and agreement
of the depth-guided render with the uniform one: image PSNR (dB, images in [0, 1]) and
mask mIoU (argmax class maps, classes present in either map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.bench.measure import bench_generator, interleaved_medians
from harness.errors import UserError
from harness.metrics.generation import keep_freed_memory
from models.camera import CameraPrior, intrinsics, look_at_origin


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two image batches in [-1, 1], computed on [0, 1] over the whole batch."""
    mse = ((a - b) / 2).square().mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def mask_miou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean IoU of the argmax class maps of two (B, K, H, W) masks over classes present."""
    la, lb = a.argmax(1), b.argmax(1)
    ious = []
    for k in range(a.shape[1]):
        union = ((la == k) | (lb == k)).sum().item()
        if union:
            ious.append(((la == k) & (lb == k)).sum().item() / union)
    return sum(ious) / len(ious)


@torch.inference_mode()
def bench_depth_guided(device: torch.device, run_dir: Path | None = None, preset: str = "cpu",
                       count: int = 8, repeats: int = 3, uniform_samples: int = 36,
                       samples: int | None = None, coarse: int | None = None,
                       whole: bool = True) -> dict[str, Any]:
    """Depth-guided against uniform test-time sampling (`uniform_samples` per ray) on one
    3dssgan generator; `samples` and `coarse` override the model's depth-guided settings.
    `whole=False` times the renderer stage only, without the whole generator and the
    agreement figures (for an untrained model, whose renders agree by chance)."""
    if device.type == "cpu":
        # As evaluation runs (harness.metrics.suite): freed blocks stay in the process. Without
        # it the uniform render's large temporaries are page-faulted in again on every call
        # unless earlier work in the process has raised glibc's mmap threshold: its time then
        # varied 0.055-0.123 s between processes on the same run and inputs.
        keep_freed_memory()
    generator, _, source = bench_generator(run_dir, preset, device)
    cfg = generator.config
    if cfg.name != "3dssgan":
        raise UserError(f"{run_dir}: a {cfg.name} run; depth-guided sampling is a 3dssgan "
                        "option: give a 3dssgan run (or no --run-dir)")
    cfg.ray_samples_test = uniform_samples
    if samples is not None:
        cfg.depth_guided_samples = samples
    if coarse is not None:
        cfg.depth_guided_coarse = coarse
    gen = torch.Generator().manual_seed(0)
    w = generator.sample_latents(count, generator=gen)
    cam2world = look_at_origin(CameraPrior().sample(count, generator=gen)).to(device)
    intrinsic = intrinsics().expand(count, 3, 3).to(device)
    maps = generator.part_maps(w)

    def with_sampling(mode: str, run: Any) -> Any:
        def call() -> Any:
            cfg.test_sampling = mode
            return run()
        return call

    renders = {mode: with_sampling(mode, lambda: generator.render_maps(maps, cam2world,
                                                                       intrinsic))
               for mode in ("uniform", "depth_guided")}
    render_s = interleaved_medians(renders, repeats, device)
    result = {
        "generator": source,
        "resolution": cfg.render_resolution,
        "samples_uniform": cfg.ray_samples_test,
        "samples_coarse": cfg.depth_guided_coarse,
        "samples_guided": cfg.depth_guided_samples,
        "images": count,
        "renderer_uniform_s": render_s["uniform"],
        "renderer_guided_s": render_s["depth_guided"],
        "speedup": render_s["uniform"] / render_s["depth_guided"],
    }
    if whole:
        full = {mode: with_sampling(mode, lambda: generator(w, cam2world, intrinsic))
                for mode in ("uniform", "depth_guided")}
        full_s = interleaved_medians(full, repeats, device)
        uniform, guided = full["uniform"](), full["depth_guided"]()
        result.update(generator_speedup=full_s["uniform"] / full_s["depth_guided"],
                      psnr_db=psnr_db(uniform["image"], guided["image"]),
                      mask_miou=mask_miou(uniform["mask"], guided["mask"]))
    cfg.test_sampling = "uniform"
    return result
