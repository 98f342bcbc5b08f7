"""Evaluation throughput for FID: the whole pipeline against its two networks alone.

Side by side in one process, on one generator (a trained run's EMA generator, or an untrained
model of the preset, whose cost is the same), `count` images in batches of
`evaluate.batch_size`, timed in alternation (medians of `repeats` rounds):

    pipeline    `harness.metrics.fid.evaluate_fid` exactly as `python -m harness.evaluate` runs
                it: the extractor built, the cached real statistics read, latents, cameras,
                renders, uint8 conversion, features, then FID and KID (the real statistics are
                computed once before timing: evaluation caches them)
    generator   the same latents, cameras and renders alone
    extractor   the extractor alone on uint8 batches of the same sizes (one rendered batch,
                reused: its cost does not depend on the pixels)
    statistics  FID and KID alone on `count` features (real ones stand in: the cost is the
                same), a part of the pipeline timed to say where its overhead goes

overhead = pipeline / (generator + extractor) - 1: what evaluation costs beyond its networks.
Each call is timed by the wall clock and by this process's CPU time. Images per second are
wall-clock; `overhead` is computed from CPU time on a CPU device (a ~minute-long call on a shared
machine gets whatever share of the cores the other processes leave it, and that share, not the
pipeline, dominated wall-clock ratios here) and from wall-clock time on a GPU (where CPU time
misses the GPU's work); `overhead_wall` is the wall-clock ratio either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.bench.measure import bench_generator, interleaved_clock_medians
from harness.metrics.fid import Features, choose_extractor, evaluate_fid, fid_kid, real_statistics
from harness.metrics.generation import (
    batches,
    camera_sampler,
    keep_freed_memory,
    latents,
    render,
    streams,
    take,
    to_uint8,
)

SEED = 0  # latents and cameras, as `python -m harness.evaluate`'s default --seed


def bench_eval(
    device: torch.device,
    run_dir: Path | None = None,  # a trained run; None: an untrained model of `preset`
    preset: str = "cpu",  # the config whose evaluate.* settings and model are measured
    count: int | None = None,  # generated images per timed call; None: evaluate.fid_samples
    repeats: int = 3,  # timed rounds (median), after a one-batch warm-up of each contender
    extractor: str = "auto",  # FID extractor; auto: as evaluation chooses for the data
) -> dict[str, Any]:
    """Seconds and images per second of the FID pipeline and of its parts; see the module
    docstring."""
    generator, config, source = bench_generator(run_dir, preset, device)
    if extractor != "auto":
        config = config.model_copy(update={"evaluate": config.evaluate.model_copy(
            update={"fid_extractor": extractor})})
    name, weights = choose_extractor(config, None)
    if device.type == "cpu":
        keep_freed_memory()  # as harness.metrics.suite does before the metrics
    features = Features(name, weights, device)
    real, _ = real_statistics(config, features, name)  # computed and cached once
    evaluate = config.evaluate
    count = count or evaluate.fid_samples
    cameras = camera_sampler(config)
    latent_stream, camera_stream = streams(SEED, "fid")
    uint8 = to_uint8(render(generator, latents(generator, evaluate.batch_size, latent_stream),
                            *cameras(evaluate.batch_size, camera_stream, device))["image"])
    # Stand-in generated features for the statistics alone: real ones (their cost is the same).
    real_features = torch.from_numpy(real["features"])  # (N, F)
    pick = torch.randint(len(real_features), (count,), generator=torch.Generator().manual_seed(0))
    generated = real_features[pick]  # (count, F)

    def pipeline(n: int) -> Any:
        return evaluate_fid(generator, config, cameras, n, SEED, name, weights)

    def generator_alone(n: int) -> None:
        latent_stream, camera_stream = streams(SEED, "fid")
        poses = cameras(n, camera_stream, device)
        for part in batches(n, evaluate.batch_size):
            render(generator, latents(generator, part.stop - part.start, latent_stream),
                   *take(poses, part))

    def extractor_alone(n: int) -> None:
        for part in batches(n, evaluate.batch_size):
            features(uint8[: part.stop - part.start])

    def statistics(n: int) -> None:
        fid_kid(generated[:n], real, evaluate.kid_subsets, evaluate.kid_subset_size, SEED)

    contenders = {"pipeline": pipeline, "generator": generator_alone,
                  "extractor": extractor_alone, "statistics": statistics}
    for run in contenders.values():  # warm-up: one batch each
        run(min(count, max(evaluate.batch_size, 2)))
    seconds = interleaved_clock_medians({key: (lambda run=run: run(count))
                                         for key, run in contenders.items()}, repeats, device,
                                        warmup=False)
    wall, cpu = seconds["wall"], seconds["cpu"]

    def overhead(s: dict[str, float]) -> float:
        return s["pipeline"] / (s["generator"] + s["extractor"]) - 1

    clock = "cpu" if device.type == "cpu" else "wall"
    return {
        "generator_source": source,
        "extractor": name,
        "images": count,
        "batch_size": evaluate.batch_size,
        **{f"{key}_s": value for key, value in wall.items()},
        **{f"{key}_cpu_s": value for key, value in cpu.items()},
        **{f"{key}_images_per_s": count / wall[key]
           for key in ("pipeline", "generator", "extractor")},
        "clock": clock,
        "overhead": overhead(seconds[clock]),
        "overhead_wall": overhead(wall),
        "statistics_fraction": seconds[clock]["statistics"] / seconds[clock]["pipeline"],
    }
