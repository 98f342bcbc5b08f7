"""Depth per class against the data's: are the parts at the depths the data puts them?

For `count` generated samples (cameras from the FID/KID camera source) every pixel of the
rendered depth map (camera-space z in head units, at the render resolution r) is labelled with
the class of the final mask there (the mask's class scores area-averaged to r, then argmax).
The per-class mean depth is compared with the same mean over the training split of the data
(depth.npy and masks.npy of the prepared dataset: the embedded synthetic portraits have depth,
CelebAMask-HQ has none). Two summaries, in head units, over the foreground classes present in
both and weighted by each class's share of the data's foreground pixels (the background is
left out: the data's backdrop lies far outside the generator's volume):
- `depth/class_mae`: mean |z_gen(k) - z_data(k)|, 0 when every part sits at the data's mean
  depth;
- `depth/offset_mae`: the same for each part's depth relative to the face,
  |(z_gen(k) - z_gen(face)) - (z_data(k) - z_data(face))| over the parts other than the face:
  where the parts sit in front of or behind the face, whatever the depth of the whole head,
  which is what 3D-SSGAN's relative depth (Sec. 3.1) is about.
Added through the metric registry as its worked example (docs/evaluation.md).

metrics.json keys: the two summaries, and `depth/class_mean/<class>` (generated) beside
`depth/class_mean_data/<class>` (data) for every class present; `depth/not_applicable` with
the reason when the generator renders no depth (a 2D model) or the data has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.config import ExperimentConfig
from harness.data.classes import CLASS_IDS, CLASS_NAMES, NUM_CLASSES
from harness.data.loading import prepared_dataset_dir
from harness.data.prepared import read_meta
from harness.metrics.generation import (
    MetricContext,
    MetricResult,
    batches,
    camera_sampler,
    device_of,
    downsample,
    latents,
    render,
    streams,
    take,
)
from harness.metrics.views import class_scores, z_depth

NO_MODEL_DEPTH = "the generator renders no depth map (a 2D model)"
NO_DATA_DEPTH = "the data has no depth maps (only the embedded synthetic portraits have them)"


def class_depth_sums(depth: torch.Tensor, class_ids: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) float64 sums of depth and (K,) pixel counts per class, over depth and class-id
    maps of the same shape."""
    ids = class_ids.flatten().long().cpu()
    values = depth.flatten().double().cpu()
    sums = torch.zeros(NUM_CLASSES, dtype=torch.float64).index_add_(0, ids, values)
    return sums, torch.bincount(ids, minlength=NUM_CLASSES).double()


def data_class_depths(config: ExperimentConfig) -> np.ndarray | None:
    """(K,) mean depth per class over the training split (NaN where a class never occurs);
    None when the prepared data has no depth."""
    sums = _data_class_sums(config)
    return None if sums is None else _means(*sums)


def _data_class_sums(config: ExperimentConfig, chunk: int = 4096
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Depth sums and pixel counts per class over the training split (class_depth_sums),
    read in chunks; None when the prepared data has no depth."""
    path = prepared_dataset_dir(config.data, config.model.resolution)
    if not read_meta(path).get("has_depth"):
        return None
    depths = np.load(path / "depth.npy", mmap_mode="r")
    masks = np.load(path / "masks.npy", mmap_mode="r")
    train = np.flatnonzero(np.load(path / "split.npy") == 0)
    sums = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for start in range(0, len(train), chunk):
        rows = train[start:start + chunk]
        block_sums, block_counts = class_depth_sums(
            torch.from_numpy(np.asarray(depths[rows], dtype=np.float64)),
            torch.from_numpy(np.asarray(masks[rows])))
        sums, counts = sums + block_sums, counts + block_counts
    return sums, counts


def summaries(generated: np.ndarray, data: np.ndarray, shares: np.ndarray
              ) -> dict[str, float | None]:
    """`depth/class_mae` and `depth/offset_mae` (module docstring) of per-class mean depths
    `generated` and `data` (NaN: class absent), weighted by the data's class `shares`."""
    face, background = CLASS_IDS["face"], CLASS_IDS["background"]
    both = ~np.isnan(generated) & ~np.isnan(data)
    both[background] = False

    def weighted(errors: np.ndarray, where: np.ndarray) -> float | None:
        weights = shares * where
        if weights.sum() == 0:
            return None
        return float((errors[where] * weights[where]).sum() / weights.sum())

    values = {"depth/class_mae": weighted(np.abs(generated - data), both),
              "depth/offset_mae": None}
    if both[face]:
        parts = both.copy()
        parts[face] = False
        offsets = (generated - generated[face]) - (data - data[face])
        values["depth/offset_mae"] = weighted(np.abs(offsets), parts)
    return values


def _means(sums: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
    return np.where(counts.numpy() > 0, sums.numpy() / np.maximum(counts.numpy(), 1), np.nan)


def run(context: MetricContext) -> MetricResult:
    """Mean depth per class of `context.count` generated samples against the data's."""
    generator, config, count = context.generator, context.config, context.count
    device = device_of(generator)
    latent_stream, camera_stream = streams(context.seed, "depth")
    all_cameras = camera_sampler(config)(count, camera_stream, device)
    sums = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for batch in batches(count, config.evaluate.batch_size):
        cam2world, intrinsic = take(all_cameras, batch)
        out = render(generator, latents(generator, batch.stop - batch.start, latent_stream),
                     cam2world, intrinsic)
        if "depth" not in out:
            return MetricResult({"depth/not_applicable": NO_MODEL_DEPTH}, count, 0)
        z = z_depth(out["depth"], cam2world, intrinsic, "ray")  # (B, r, r)
        ids = downsample(class_scores(out["mask"]), z.shape[-1]).argmax(1)
        batch_sums, batch_counts = class_depth_sums(z, ids)
        sums, counts = sums + batch_sums, counts + batch_counts
    data_sums = _data_class_sums(config)
    if data_sums is None:
        return MetricResult({"depth/not_applicable": NO_DATA_DEPTH}, count, count)
    data, shares = _means(*data_sums), (data_sums[1] / data_sums[1].sum()).numpy()
    generated = _means(sums, counts)
    values: dict[str, Any] = summaries(generated, data, shares)
    for k, name in enumerate(CLASS_NAMES):
        if not np.isnan(generated[k]):
            values[f"depth/class_mean/{name}"] = float(generated[k])
        if not np.isnan(data[k]):
            values[f"depth/class_mean_data/{name}"] = float(data[k])
    return MetricResult(values, num_samples=count, images=count)


def lines(values: dict[str, Any]) -> list[str]:
    """The depth metric's line of the CLI summary."""
    if values.get("depth/class_mae") is not None:
        offset = values.get("depth/offset_mae")
        return [f"depth per class: mean |generated - data| = {values['depth/class_mae']:.4f}, "
                f"relative to the face = {'n/a' if offset is None else f'{offset:.4f}'} "
                "head units"]
    if values.get("depth/not_applicable"):
        return [f"depth per class: not applicable ({values['depth/not_applicable']})"]
    return []
