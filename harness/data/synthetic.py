"""The embedded synthetic dataset: generation into the prepared format, and the cache.

Each identity's portrait is sampled by `harness.data.synthetic_scenes` from its own random
stream and rendered from a few cameras of the paper's pose prior by
`harness.data.synthetic_render`; mild sensor noise is added. Blocks of identities render on
threads and are written by `PreparedWriter`; `ensure_synthetic` generates a dataset once per
parameter set into a file-locked cache.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from harness.data.classes import CLASS_NAMES, NUM_CLASSES
from harness.data.prepared import PreparedWriter, read_meta
from harness.data.synthetic_render import render
from harness.data.synthetic_scenes import sample_identity, stack_scenes
from harness.errors import UserError
from models.camera import CameraPrior, intrinsics, look_at_origin

log = logging.getLogger(__name__)

GENERATOR_VERSION = "synthetic-v2"  # bump when the generated pixels change: keys the cache
VAL_FRACTION = 0.1  # the last 10% of identities are the validation split
RESOLUTIONS = (32, 64, 128, 256)
NOISE_STD = 0.012  # sensor noise, fraction of the full intensity range
BLOCK_IDENTITIES = 32  # identities rendered together (all their views in one batch)


def _views(rng: np.random.Generator, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera angles (V, 2) from the paper's prior and light directions (V, 3) for one identity."""
    prior = CameraPrior()
    eps = rng.normal(size=(views, 2))
    angles = np.stack([prior.yaw_mean + prior.yaw_std * eps[:, 0],
                       prior.pitch_mean + prior.pitch_std * eps[:, 1]], axis=1)
    light = rng.normal(size=(views, 3)) * (0.6, 0.4, 0.3) + (0.0, 0.5, 1.0)  # front, above
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    return torch.from_numpy(angles).float(), torch.from_numpy(light).float()


def render_identities(
    first: int, count: int, views: int, resolution: int, seed: int
) -> dict[str, np.ndarray]:
    """Render identities first..first+count-1, `views` each, as prepared-format arrays."""
    scenes, angles, lights = [], [], []
    for identity in range(first, first + count):
        rng = np.random.default_rng([seed, identity])  # one stream per identity
        scenes.append(sample_identity(rng).repeat(views))
        view_angles, view_light = _views(rng, views)
        angles.append(view_angles)
        lights.append(view_light)
    angle = torch.cat(angles)  # (N, 2)
    cam2world = look_at_origin(angle)  # (N, 4, 4)
    out = render(stack_scenes(scenes), cam2world, torch.cat(lights), resolution)
    noise = torch.randn(out["image"].shape, generator=torch.Generator().manual_seed(
        seed * 1_000_003 + first))
    image = ((out["image"] + NOISE_STD * noise).clamp(0, 1) * 255).round().to(torch.uint8)
    total = count * views
    return {
        "images": image.numpy(),
        "masks": out["mask"].to(torch.uint8).numpy(),
        "depth": out["depth"].to(torch.float16).numpy(),
        "angles": angle.numpy(),
        "cameras": cam2world.numpy(),
        "intrinsics": intrinsics().expand(total, 3, 3).numpy(),
        "identity": np.repeat(np.arange(first, first + count), views).astype(np.int64),
    }


def class_frequencies(masks: np.ndarray, chunk: int = 1024) -> dict[str, dict[str, float]]:
    """Per class: the fraction of all pixels, and the fraction of samples containing it."""
    pixels = np.zeros(NUM_CLASSES)
    present = np.zeros(NUM_CLASSES)
    for start in range(0, len(masks), chunk):
        block = np.asarray(masks[start : start + chunk])
        block = block.reshape(len(block), -1)  # (n, R*R)
        counts = np.stack([np.bincount(m, minlength=NUM_CLASSES) for m in block])
        pixels += counts.sum(0)
        present += (counts > 0).sum(0)
    return {name: {"pixels": float(pixels[k] / pixels.sum()),
                   "samples": float(present[k] / len(masks))}
            for k, name in enumerate(CLASS_NAMES)}


def _in_threads(function: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> Iterator[Any]:
    """function(*job) for each job, in order, on as many threads as torch uses.

    Each thread runs torch single-threaded: on a shared machine, blocks on independent threads
    keep both cores busy, where torch's own parallel ops stall waiting for a descheduled thread.
    At most two results per thread are held at once.
    """
    workers = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending: deque[Future[Any]] = deque()
        for job in jobs:
            pending.append(pool.submit(function, *job))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_size(identities: int, views: int, resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise UserError(f"--resolution {resolution}: the synthetic data renders at "
                        f"{', '.join(map(str, RESOLUTIONS))}; pick one of those")
    if identities < 2 or views < 1:
        raise UserError(f"--identities {identities} --views {views}: need at least 2 identities "
                        "and 1 view")


def generate_synthetic(
    out_dir: str | Path, identities: int, views: int, resolution: int, seed: int
) -> dict[str, Any]:
    """Render `identities` x `views` samples into a prepared dataset at `out_dir`; its meta.

    Deterministic from `seed`; resumable (an interrupted run continues from its partial
    directory); published atomically. Logs the class frequencies.
    """
    _check_size(identities, views, resolution)
    total = identities * views
    params = {"identities": identities, "views": views, "seed": seed,
              "generator": GENERATOR_VERSION}
    writer = PreparedWriter(out_dir, total, resolution, "synthetic", params, has_depth=True)
    first_val = identities - max(1, math.ceil(VAL_FRACTION * identities))
    todo = [first for first in range(0, identities, BLOCK_IDENTITIES)
            if not writer.done_mask[first * views : (first + BLOCK_IDENTITIES) * views].all()]
    jobs = [(first, min(BLOCK_IDENTITIES, identities - first), views, resolution, seed)
            for first in todo]
    for job, arrays in tqdm(zip(jobs, _in_threads(render_identities, jobs), strict=True),
                            total=len(jobs),
                            desc=f"synthetic {resolution}px", unit="block",
                            disable=not log.isEnabledFor(logging.INFO)):
        arrays["split"] = (arrays["identity"] >= first_val).astype(np.uint8)
        writer.write(job[0] * views, **arrays)
    frequencies = class_frequencies(writer.arrays["masks"])
    log.info("class frequencies (%d samples): %s", total, ", ".join(
        f"{name} {f['pixels']:.2%} px / {f['samples']:.0%} of samples"
        for name, f in frequencies.items()))
    missing = [name for name, f in frequencies.items() if f["samples"] == 0]
    if missing:
        log.warning("classes absent from this dataset (too few identities?): %s",
                    ", ".join(missing))
    return writer.finalize({"class_frequencies": frequencies, "views_per_identity": views})


def default_cache_dir() -> Path:
    """$HARNESS_CACHE_DIR/synthetic, else ~/.cache/ssgan3d-harness/synthetic."""
    root = os.environ.get("HARNESS_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ssgan3d-harness") / "synthetic"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so concurrent trials generate one dataset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def synthetic_dir(identities: int, views: int, resolution: int, seed: int,
                  cache_dir: str | Path | None = None) -> Path:
    """Where the synthetic dataset with these parameters is cached (it may not exist yet)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / f"{GENERATOR_VERSION}-i{identities}-v{views}-r{resolution}-s{seed}"


def ensure_synthetic(
    identities: int, views: int, resolution: int, seed: int,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cached synthetic dataset with these parameters, generated on first use."""
    _check_size(identities, views, resolution)
    out = synthetic_dir(identities, views, resolution, seed, cache_dir)
    root = out.parent
    if (out / "meta.json").is_file():
        return out
    with _locked(root / f".{out.name}.lock"):
        if not (out / "meta.json").is_file():
            log.info("generating synthetic data into %s (first use)", out)
            generate_synthetic(out, identities, views, resolution, seed)
    read_meta(out)
    return out
