"""Part disentanglement (3D-SSGAN Table 1): D_mean and masked D_mean of part edits (Eq. 14).

For each of N random latents and each part in PARTS, that part's latent codes (shape and
texture by default, `evaluate.edit_what` for either alone) are replaced by those of another
random latent (`g.edit_part`, so a holistic model's own editing method is used), and the
original and edited latents are rendered at the same camera: the frontal camera, and a camera
drawn from the prior per sample.

- Difference map: mean over R, G, B of |p_edited - p_original|, pixels in [0, 1].
- D_mean (Eq. 14): the mean of the difference map over the whole W x H image.
- Masked D_mean: the mean of the difference map over the pixels OUTSIDE the edited region,
  i.e. (sum of the map over outside pixels) / (number of outside pixels). The edited region
  is the union of the part's pixels (argmax of the rendered mask) in the original and in the
  edited image, so neither where the part was nor where it went counts as collateral change.
"""

from __future__ import annotations

import torch

from harness.data.classes import CLASS_IDS
from harness.metrics.generation import (
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


def difference_map(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mean over RGB of |edited - original| for (B, 3, H, W) images in [-1, 1],
    in units of the [0, 1] pixel range."""
    return (edited.float() - original.float()).abs().mean(1) / 2


def d_mean(difference: torch.Tensor) -> torch.Tensor:
    """(B,) Eq. 14: the mean of each (H, W) difference map."""
    return difference.flatten(1).mean(1)


def d_mean_masked(difference: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B,) mean of the difference map over pixels outside `region` (B, H, W) bool;
    NaN where the region covers the whole image."""
    outside = (~region).flatten(1).float()
    return (difference.flatten(1) * outside).sum(1) / outside.sum(1)  # 0 / 0 -> NaN


def edited_region(original_labels: torch.Tensor, edited_labels: torch.Tensor, part: int
                  ) -> torch.Tensor:
    """(B, H, W) bool: the part's pixels in the original or in the edited class map."""
    return (original_labels == part) | (edited_labels == part)


# Difference-map arrays kept for figures and the axis of their samples: original (V, S, 3, H, W)
# uint8; edited (V, P, S, 3, H, W) uint8; difference (V, P, S, H, W) float; region (V, P, S, H, W)
# bool, for V = VIEWS and P = PARTS.
MAP_SAMPLE_AXIS = {"original": 1, "edited": 2, "difference": 2, "region": 2}


def evaluate_disentanglement(
    generator: torch.nn.Module, count: int, seed: int, batch_size: int, what: str = "both",
    keep_maps: int = 4,
) -> MetricResult:
    """D_mean and masked D_mean per part and view over `count` latents.

    Artifacts: `rows` (one dict per sample, part and view, for RUN_DIR/eval/disentangle.csv)
    and `maps` (the first `keep_maps` samples' images, difference maps and edited regions,
    laid out as MAP_SAMPLE_AXIS says).
    """
    device = device_of(generator)
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
                region = edited_region(original_labels, labels(edited["mask"]), k)
                full = d_mean(difference).tolist()
                masked = d_mean_masked(difference, region).tolist()
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
    values["disentangle_what"] = what
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
