"""View consistency without a pretrained network: reprojection through rendered depth.

For each latent, views A and B are rendered at two independent poses from the camera prior.
Every pixel centre of A is lifted to 3D with A's depth and projected into B, where B's image
and mask are sampled bilinearly: "B warped into A". A pixel of A is co-visible when its point
projects inside B's frame, in front of B's camera, and (given B's depth) is not hidden in B:
its z in B is at most B's z there times (1 + `occlusion_tolerance`).

- Photometric L1: mean over RGB of |A - warped B| in [0, 1] pixel units, averaged over the
  co-visible pixels of A's foreground (A's class is not background), per pair.
- Mask mIoU: per pair, the mean IoU between A's class map and the warped class map of B over
  the co-visible pixels, over the classes present in either.

Resolution: everything is computed at the depth's resolution (the generator's render
resolution r; the generator's depth exists only there). Images are downsampled to r by area
averaging; masks likewise (class scores, or one-hot class ids) before the argmax.

A model without depth (a 2D model such as SemanticStyleGAN) cannot be measured: both values
are null and `view/not_applicable` says why (the key exists only then), so that reports show
"not applicable" rather than "not measured".

Depth conventions: the generator's `depth` is the expected distance along the unit-length ray
(`depth_kind="ray"`, models.rendering); the prepared synthetic data stores camera-space z
(`depth_kind="z"`, harness.data.prepared). z = distance * cos(angle between ray and optical
axis); `models.camera.unproject_depth` takes z.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.data.classes import CLASS_IDS, NUM_CLASSES
from harness.metrics.generation import (
    MetricContext,
    MetricResult,
    batches,
    device_of,
    downsample,
    latents,
    prior_camera_pairs,
    render,
    streams,
    take,
)
from models.camera import pixel_rays, project, unproject_depth

log = logging.getLogger(__name__)

OCCLUSION_TOLERANCE = 0.03  # relative z margin of the occlusion test (3% is ~0.12 head units)
NOT_APPLICABLE = "view/not_applicable"  # metrics.json: why the view metrics are null
NO_DEPTH = ("the generator renders no depth map (a 2D model), so one view cannot be reprojected "
            "into another")
BACKGROUND = CLASS_IDS["background"]


@dataclass
class Warp:
    """View B resampled at view A's pixels (resolution r of A's depth)."""

    image: torch.Tensor  # (B, 3, r, r) B's colours seen through A's pixels
    scores: torch.Tensor  # (B, K, r, r) B's class scores there
    valid: torch.Tensor  # (B, r, r) bool, co-visible pixels of A


def z_depth(depth: torch.Tensor, cam2world: torch.Tensor, intrinsic: torch.Tensor,
            depth_kind: str) -> torch.Tensor:
    """(B, r, r) camera-space z of a (B, r, r) or (B, 1, r, r) depth map of kind "ray" or "z"."""
    depth = depth.reshape(depth.shape[0], depth.shape[-2], depth.shape[-1]).float()
    if depth_kind == "z":
        return depth
    if depth_kind != "ray":
        raise ValueError(f"depth_kind={depth_kind!r}, expected 'ray' or 'z'")
    _, directions = pixel_rays(cam2world, intrinsic, depth.shape[-1])  # (B, r*r, 3) unit
    cosine = (directions * cam2world[:, None, :3, 2]).sum(-1)  # (B, r*r) ray . optical axis
    return depth * cosine.view_as(depth)


def class_scores(mask: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(B, K, H, W) float scores from class scores or from (B, H, W) integer class ids."""
    if mask.dim() == 3:
        return F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).float()
    return mask.float()


def warp(
    image_b: torch.Tensor,
    mask_b: torch.Tensor,
    depth_a: torch.Tensor,
    cam_a: torch.Tensor,
    cam_b: torch.Tensor,
    intrinsics: torch.Tensor,
    depth_b: torch.Tensor | None = None,
    depth_kind: str = "ray",
    occlusion_tolerance: float = OCCLUSION_TOLERANCE,
) -> Warp:
    """Warp view B (image (B, 3, H, W), mask scores (B, K, H, W) or ids (B, H, W)) into view A.

    depth_a (and depth_b, for the occlusion test) are (B, [1,] r, r) of `depth_kind`; cameras
    are camera-to-world (B, 4, 4); `intrinsics` (B, 3, 3) or (3, 3) normalised, shared.
    """
    size = depth_a.shape[-1]
    z_a = z_depth(depth_a, cam_a, intrinsics, depth_kind)
    points = unproject_depth(z_a, cam_a, intrinsics)  # (B, r*r, 3) world
    uv, z_in_b = project(points, cam_b, intrinsics.to(points.dtype))  # (B, r*r, 2), (B, r*r)
    grid = (2 * uv - 1).view(-1, size, size, 2)  # grid_sample's [-1, 1], x then y
    z_in_b = z_in_b.view(-1, size, size)
    image = F.grid_sample(downsample(image_b, size), grid, mode="bilinear",
                          padding_mode="border", align_corners=False)
    scores = F.grid_sample(downsample(class_scores(mask_b), size), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    inside = (uv >= 0).all(-1) & (uv <= 1).all(-1)
    valid = inside.view(-1, size, size) & (z_in_b > 0)
    if depth_b is not None:
        z_b = z_depth(depth_b, cam_b, intrinsics, depth_kind)[:, None]  # (B, 1, r, r)
        seen = F.grid_sample(z_b, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)[:, 0]
        valid &= z_in_b <= seen * (1 + occlusion_tolerance)
    return Warp(image, scores, valid)


def photometric_l1(image_a: torch.Tensor, warped: Warp, foreground: torch.Tensor
                   ) -> torch.Tensor:
    """(B,) mean |A - warped B| over RGB, [0, 1] units, over co-visible foreground pixels of A
    (NaN for a pair without any)."""
    a = downsample(image_a, warped.image.shape[-1])
    error = (a.float() - warped.image).abs().mean(1) / 2  # (B, r, r)
    use = (warped.valid & foreground).flatten(1).float()
    return (error.flatten(1) * use).sum(1) / use.sum(1)


def mask_miou(labels_a: torch.Tensor, labels_b: torch.Tensor, valid: torch.Tensor,
              num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(B,) mean IoU over the classes present in either (B, r, r) class map within `valid`."""
    a = F.one_hot(labels_a.long(), num_classes).bool() & valid[..., None]  # (B, r, r, K)
    b = F.one_hot(labels_b.long(), num_classes).bool() & valid[..., None]
    intersection = (a & b).flatten(1, 2).sum(1).double()  # (B, K)
    union = (a | b).flatten(1, 2).sum(1).double()
    iou = intersection / union  # NaN for absent classes
    return iou.nanmean(1)


def consistency(
    image_a: torch.Tensor, mask_a: torch.Tensor, depth_a: torch.Tensor, cam_a: torch.Tensor,
    image_b: torch.Tensor, mask_b: torch.Tensor, depth_b: torch.Tensor, cam_b: torch.Tensor,
    intrinsics: torch.Tensor, depth_kind: str = "ray",
) -> dict[str, torch.Tensor]:
    """Per pair (B,): photometric L1 and mask mIoU of view B warped into view A.

    Masks are class scores (B, K, H, W) or class ids (B, H, W); images in [-1, 1].
    """
    warped = warp(image_b, mask_b, depth_a, cam_a, cam_b, intrinsics, depth_b, depth_kind)
    size = depth_a.shape[-1]
    labels_a = downsample(class_scores(mask_a), size).argmax(1)
    labels_b = warped.scores.argmax(1)
    return {"photometric_l1": photometric_l1(image_a, warped, labels_a != BACKGROUND),
            "mask_miou": mask_miou(labels_a, labels_b, warped.valid)}


def evaluate_views(generator: torch.nn.Module, count: int, seed: int, batch_size: int
                   ) -> MetricResult:
    """Photometric L1 and mask mIoU between two prior views of each of `count` latents."""
    device = device_of(generator)
    latent_stream, camera_stream = streams(seed, "views")
    view_a, view_b = prior_camera_pairs(count, camera_stream, device)
    errors, ious = [], []
    for batch in batches(count, batch_size):
        w = latents(generator, batch.stop - batch.start, latent_stream)
        (cam_a, intrinsic), (cam_b, _) = take(view_a, batch), take(view_b, batch)
        a = render(generator, w, cam_a, intrinsic)
        if "depth" not in a:  # a 2D model (SemanticStyleGAN): nothing to reproject
            log.warning("views: not applicable to %s: %s", type(generator).__name__, NO_DEPTH)
            return MetricResult({"view/photometric_l1": None, "view/mask_miou": None,
                                 NOT_APPLICABLE: NO_DEPTH},
                                num_samples=0, images=batch.stop - batch.start)
        b = render(generator, w, cam_b, intrinsic)
        pair = consistency(a["image"], a["mask"], a["depth"], cam_a,
                           b["image"], b["mask"], b["depth"], cam_b, intrinsic, depth_kind="ray")
        errors.append(pair["photometric_l1"].cpu())
        ious.append(pair["mask_miou"].cpu())
    values = {"view/photometric_l1": float(torch.cat(errors).double().nanmean()),
              "view/mask_miou": float(torch.cat(ious).nanmean())}
    return MetricResult(values, num_samples=count, images=2 * count)


def run(context: MetricContext) -> MetricResult:
    """View consistency of the context's generator (registry entry)."""
    return evaluate_views(context.generator, context.count, context.seed,
                          context.config.evaluate.batch_size)


def lines(values: dict[str, Any]) -> list[str]:
    """View consistency's line of the CLI summary."""
    if values.get("view/photometric_l1") is not None:
        miou = values.get("view/mask_miou")
        return [f"view consistency: photometric L1 = {values['view/photometric_l1']:.4f}, "
                f"mask mIoU = {'n/a' if miou is None else f'{miou:.4f}'}"]
    if values.get("view/not_applicable"):
        return [f"view consistency: not applicable ({values['view/not_applicable']})"]
    return []
