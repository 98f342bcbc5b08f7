"""Part disentanglement (3D-SSGAN Table 1): D_mean and masked D_mean of part edits (Eq. 14).

For each of N random latents and each part in PARTS, that part is edited with the codes of
another random latent (`g.edit_part`; `evaluate.edit_what: part`, the default, is each model's
localised edit, `models.generator.PartGenerator.part_edit`, see docs/part-edits.md), and the
original and edited latents are rendered at the same camera: the frontal camera, and a camera
drawn from the prior per sample.

- Difference map: mean over R, G, B of |p_edited - p_original|, pixels in [0, 1].
- D_mean (Eq. 14): the mean of the difference map over the whole W x H image.
- Masked D_mean (`evaluate.masked_d_mean`): the difference map with the edited region set to
  zero, averaged over the whole W x H image ("image", the paper's: Fig. 4 shows it as the mean
  of the masked map, Table 1 compares it with D_mean), or over the pixels outside the region
  only ("outside", not the paper's; larger by W H / outside pixels). The edited region
  (`evaluate.edit_region`) is the part's pixels (argmax of the rendered mask) in the original
  image, in the edited one, or their union (the default: neither where the part was nor where
  it went counts as collateral change).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.data.classes import CLASS_IDS
from harness.metrics.generation import (
    MetricContext,
    MetricResult,
    batches,
    device_of,
    frontal_cameras,
    labels,
    latent_pairs,
    prior_cameras,
    render,
    streams,
    take,
    to_uint8,
)

PARTS = ("mouth", "eyes", "brows", "nose", "hair")  # 3D-SSGAN Table 1's columns
VIEWS = ("frontal", "random")
# Per-sample rows: the columns of eval/disentangle.csv, of the W&B table and of the reports.
DISENTANGLE_COLUMNS = ("sample", "part", "view", "what", "d_mean", "d_mean_masked")


def difference_map(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mean over RGB of |edited - original| for (B, 3, H, W) images in [-1, 1],
    in units of the [0, 1] pixel range."""
    return (edited.float() - original.float()).abs().mean(1) / 2


def d_mean(difference: torch.Tensor) -> torch.Tensor:
    """(B,) Eq. 14: the mean of each (H, W) difference map."""
    return difference.flatten(1).mean(1)


MASKED_AVERAGES = ("image", "outside")  # evaluate.masked_d_mean
EDIT_REGIONS = ("union", "original", "edited")  # evaluate.edit_region


def d_mean_masked(difference: torch.Tensor, region: torch.Tensor, average: str = "image"
                  ) -> torch.Tensor:
    """(B,) masked D_mean: the difference map outside `region` (B, H, W) bool, summed and
    divided by W H ("image", the paper's) or by the number of outside pixels ("outside"; NaN
    where the region covers the whole image)."""
    outside = (~region).flatten(1).float()
    total = (difference.flatten(1) * outside).sum(1)
    if average == "image":
        return total / outside.shape[1]
    assert average == "outside", average
    return total / outside.sum(1)  # 0 / 0 -> NaN


def edited_region(original_labels: torch.Tensor, edited_labels: torch.Tensor, part: int,
                  which: str = "union") -> torch.Tensor:
    """(B, H, W) bool: the part's pixels in the original class map, the edited one, or either."""
    original, edited = original_labels == part, edited_labels == part
    return {"union": original | edited, "original": original, "edited": edited}[which]


# Difference-map arrays kept for figures and the axis of their samples: original (V, S, 3, H, W)
# uint8; edited (V, P, S, 3, H, W) uint8; difference (V, P, S, H, W) float; region (V, P, S, H, W)
# bool, for V = VIEWS and P = PARTS.
MAP_SAMPLE_AXIS = {"original": 1, "edited": 2, "difference": 2, "region": 2}


def evaluate_disentanglement(
    generator: torch.nn.Module, count: int, seed: int, batch_size: int, what: str = "part",
    keep_maps: int = 4, masked_average: str = "image", region_of: str = "union",
) -> MetricResult:
    """D_mean and masked D_mean per part and view over `count` latents.

    `what` is the edit ("part": the model's localised edit; "both", "shape", "texture": those
    codes); `masked_average` and `region_of` define masked D_mean (module docstring).

    Artifacts: `rows` (one dict per sample, part and view, for RUN_DIR/eval/disentangle.csv)
    and `maps` (the first `keep_maps` samples' images, difference maps and edited regions,
    laid out as MAP_SAMPLE_AXIS says).
    """
    device = device_of(generator)
    what = generator.part_edit if what == "part" else what
    latent_stream, camera_stream = streams(seed, "disentangle")
    rows: list[dict[str, object]] = []
    maps: dict[str, list[torch.Tensor]] = {key: [] for key in MAP_SAMPLE_AXIS}
    random_cameras = prior_cameras(count, camera_stream, device)
    for batch in batches(count, batch_size):
        first, n = batch.start, batch.stop - batch.start
        w, w_new = latent_pairs(generator, n, latent_stream)
        cameras = {"frontal": frontal_cameras(n, device), "random": take(random_cameras, batch)}
        keep = max(0, min(n, keep_maps - first))
        kept: dict[str, list] = {key: [] for key in MAP_SAMPLE_AXIS}
        for view in VIEWS:
            original = render(generator, w, *cameras[view])
            original_labels = labels(original["mask"])
            kept["original"].append(to_uint8(original["image"][:keep]).cpu())
            per_part: dict[str, list[torch.Tensor]] = {"edited": [], "difference": [],
                                                       "region": []}
            for part in PARTS:
                k = CLASS_IDS[part]
                edited = render(generator, generator.edit_part(w, k, w_new, what), *cameras[view])
                difference = difference_map(original["image"], edited["image"])
                region = edited_region(original_labels, labels(edited["mask"]), k, region_of)
                full = d_mean(difference).tolist()
                masked = d_mean_masked(difference, region, masked_average).tolist()
                for index in range(n):
                    rows.append({"sample": first + index, "part": part, "view": view,
                                 "what": what, "d_mean": full[index],
                                 "d_mean_masked": masked[index]})
                per_part["edited"].append(to_uint8(edited["image"][:keep]).cpu())
                per_part["difference"].append(difference[:keep].cpu())
                per_part["region"].append(region[:keep].cpu())
            for key, values in per_part.items():
                kept[key].append(torch.stack(values))
        if keep:
            for key, values in kept.items():
                maps[key].append(torch.stack(values))
    values = summarise(rows)
    values |= {"disentangle_what": what, "d_mean_masked_average": masked_average,
               "d_mean_masked_region": region_of}
    artifacts = {"rows": rows, "maps": {key: torch.cat(value, dim=MAP_SAMPLE_AXIS[key])
                                        for key, value in maps.items() if value}}
    return MetricResult(values, num_samples=count, images=count * len(VIEWS) * (1 + len(PARTS)),
                        artifacts=artifacts)


def summarise(rows: list[dict[str, object]]) -> dict[str, float]:
    """metrics.json entries d_mean/<part>@<view> and d_mean_masked/<part>@<view>: means over
    samples (masked: over samples where it is defined)."""
    values: dict[str, float] = {}
    for part in PARTS:
        for view in VIEWS:
            selected = [row for row in rows if row["part"] == part and row["view"] == view]
            full = torch.tensor([float(row["d_mean"]) for row in selected], dtype=torch.float64)
            masked = torch.tensor([float(row["d_mean_masked"]) for row in selected],
                                  dtype=torch.float64)
            values[f"d_mean/{part}@{view}"] = float(full.mean())
            values[f"d_mean_masked/{part}@{view}"] = float(masked.nanmean())
    return values


def run(context: MetricContext) -> MetricResult:
    """D_mean of the context's generator (registry entry), with the `evaluate.*` settings."""
    cfg = context.config.evaluate
    return evaluate_disentanglement(context.generator, context.count, context.seed,
                                    cfg.batch_size, cfg.edit_what, cfg.difference_maps,
                                    cfg.masked_d_mean, cfg.edit_region)


def lines(values: dict[str, Any]) -> list[str]:
    """The D_mean table of the CLI summary: a row per part, two columns per view."""
    if not any(key.startswith("d_mean/") for key in values):
        return []

    def cell(key: str) -> str:
        value = values.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    out = [f"{'part':<8}" + "".join(f"{f'D_mean@{v}':>16}{f'masked@{v}':>16}" for v in VIEWS)]
    for part in PARTS:
        out.append(f"{part:<8}" + "".join(
            f"{cell(f'd_mean/{part}@{v}'):>16}{cell(f'd_mean_masked/{part}@{v}'):>16}"
            for v in VIEWS))
    return out
