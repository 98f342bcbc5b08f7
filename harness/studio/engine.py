"""What the studio does with a run's EMA generator, without any user interface.

Every operation goes through the generator contract the evaluation uses (models.generator):
latents from `sample_latents`, part edits from `edit_part`, interpolation from
`interpolate_parts`, progressive generation from `active_parts`, and the edit's D_mean and
masked D_mean from harness.metrics.disentangle (Eq. 14), so the numbers shown are the
evaluation's. An operation a model cannot do (a 2D model has no camera; a holistic model has no
per-part generators) is named by `unsupported`, which says why, instead of failing.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.classes import CLASS_IDS, CLASS_NAMES, PROGRESSIVE_ORDER
from harness.metrics.disentangle import d_mean, d_mean_masked, difference_map, edited_region
from harness.metrics.generation import labels
from harness.runtime.checkpoint import LoadedGenerator
from harness.visualize import colourise_mask, to_uint8_image
from models.camera import (
    CAMERA_RADIUS,
    PITCH_MEAN,
    PITCH_STD,
    YAW_MEAN,
    YAW_STD,
    intrinsics,
    look_at_origin,
)
from models.generator import slot_count
from models.registry import get_model

PRIOR_SPREAD = 2.0  # pose range without the data's poses: the prior's mean +- this many stds
EDIT_STREAM = 1_000_003  # seed offset of the latent a part edit takes its new codes from


@dataclass(frozen=True)
class PoseRange:
    """Yaw and pitch limits (radians) of the sliders, and where they come from."""

    yaw: tuple[float, float]
    pitch: tuple[float, float]
    source: str  # "the data's poses" or "the camera prior (+-2 std)"

    @property
    def frontal(self) -> tuple[float, float]:
        """The prior's mean pose (the frontal view)."""
        return YAW_MEAN, PITCH_MEAN


@dataclass
class Portrait:
    """One latent at one view as pictures: (H, W, 3) uint8 each; depth None without one."""

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray | None
    labels: torch.Tensor  # (H, W) class ids of the mask
    raw: torch.Tensor  # (3, H, W) image in [-1, 1]


@dataclass
class Edit:
    """A part edit: the portrait before and after, the difference map and Eq. 14's numbers."""

    original: Portrait
    edited: Portrait
    difference: np.ndarray  # (H, W, 3) uint8, the difference map scaled x4 for display
    d_mean: float  # Eq. 14 over the whole image
    d_mean_masked: float  # outside the edited part's region (the evaluation's settings)
    what: str  # the codes replaced: shape, texture or both
    latent: torch.Tensor  # (1, S, w_dim) the edited latents (to keep the edit and go on)


def angles_of(cam2world: torch.Tensor) -> torch.Tensor:
    """(N, 2) yaw/pitch of cameras looking at the origin (models.camera.camera_position)."""
    position = cam2world[:, :3, 3] / CAMERA_RADIUS
    yaw = torch.atan2(position[:, 2], position[:, 0])
    pitch = torch.acos(position[:, 1].clamp(-1, 1))
    return torch.stack([yaw, pitch], dim=1)


def pose_range(loaded: LoadedGenerator) -> PoseRange:
    """The data's pose range when its prepared copy is on this machine, else the prior's
    (nothing is generated or prepared for it)."""
    from harness.data.loading import existing_dataset_dir

    config = loaded.config
    path = existing_dataset_dir(config.data, config.model.resolution)
    try:
        cameras = None if path is None else torch.from_numpy(np.load(path / "cameras.npy"))
    except (OSError, ValueError):
        cameras = None
    if cameras is not None and len(cameras):
        angles = angles_of(cameras.float())
        yaw, pitch = angles[:, 0], angles[:, 1]
        if config.data.flip:  # mirrored copies: yaw reflected about the frontal view
            yaw = torch.cat([yaw, 2 * YAW_MEAN - yaw])
        return PoseRange((float(yaw.min()), float(yaw.max())),
                         (float(pitch.min()), float(pitch.max())), "the data's poses")
    return PoseRange((YAW_MEAN - PRIOR_SPREAD * YAW_STD, YAW_MEAN + PRIOR_SPREAD * YAW_STD),
                     (PITCH_MEAN - PRIOR_SPREAD * PITCH_STD, PITCH_MEAN + PRIOR_SPREAD * PITCH_STD),
                     f"the camera prior (+-{PRIOR_SPREAD:g} std)")


def depth_picture(depth: torch.Tensor, size: int) -> np.ndarray:
    """(1, r, r) ray distance -> (size, size, 3) uint8, near bright, min-max over the image."""
    near, far = depth.min(), depth.max()
    scaled = 1 - (depth - near) / (far - near).clamp_min(1e-6)
    scaled = torch.nn.functional.interpolate(scaled[None].float(), size=(size, size),
                                             mode="bilinear", align_corners=False)[0, 0]
    grey = (scaled.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.repeat(grey[..., None], 3, axis=2)


class Studio:
    """A run's EMA generator with the studio's operations; one latent is (1, S, w_dim)."""

    def __init__(self, loaded: LoadedGenerator):
        self.loaded = loaded
        self.generator = loaded.generator
        self.config = loaded.config
        self.model = str(self.config.model.name)
        self.spec = get_model(self.model)
        self.poses = pose_range(loaded)
        self.device = next(self.generator.parameters()).device

    # ---- what a model cannot do ---------------------------------------------------------

    def unsupported(self, operation: str) -> str | None:
        """Why `operation` ("pose", "depth", "progressive", "turntable", "shape-edit") is not
        available for this model; None when it is (models.registry.ModelSpec.cannot)."""
        return self.spec.cannot(operation)

    # ---- latents --------------------------------------------------------------------------

    def latent(self, seed: int) -> torch.Tensor:
        """The latent of `seed` at truncation 1 (the evaluation's sampling, no mixing)."""
        with torch.no_grad():
            return self.generator.sample_latents(1, generator=torch.Generator().manual_seed(seed))

    def mean_latent(self) -> torch.Tensor:
        """w_avg in every slot: the start of an inversion."""
        slots = slot_count(self.generator.num_parts)
        return self.generator.mapping.w_avg.expand(1, slots, -1).clone()

    def interpolate(self, w_a: torch.Tensor, w_b: torch.Tensor, t: float,
                    part: str | None = None, what: str = "both") -> torch.Tensor:
        """Latents a fraction t from w_a to w_b on `part` only (None: the whole face; Fig. 10)."""
        parts = None if part is None else [CLASS_IDS[part]]
        return self.generator.interpolate_parts(w_a, w_b, t, parts, what)

    # ---- pictures ---------------------------------------------------------------------------

    def cameras(self, yaw: float, pitch: float, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """cam2world (n, 4, 4) and intrinsics (n, 3, 3) of one pose, on the generator's device."""
        cam2world = look_at_origin(torch.tensor([[yaw, pitch]], dtype=torch.float32))
        return (cam2world.expand(n, 4, 4).to(self.device),
                intrinsics().expand(n, 3, 3).to(self.device))

    def forward(self, w: torch.Tensor, yaw: float, pitch: float,
                active_parts: list[int] | None = None) -> dict[str, torch.Tensor]:
        """The generator's outputs for latents `w` at one pose (no autograd)."""
        with torch.no_grad():
            return self.generator(w.to(self.device), *self.cameras(yaw, pitch, len(w)),
                                  active_parts=active_parts)

    def portrait(self, out: dict[str, torch.Tensor], index: int = 0) -> Portrait:
        """Sample `index` of generator outputs as pictures."""
        image = out["image"][index]
        depth = out.get("depth")
        return Portrait(to_uint8_image(image), colourise_mask(out["mask"][index]),
                        None if depth is None else depth_picture(depth[index], image.shape[-1]),
                        labels(out["mask"][index : index + 1])[0], image.detach())

    def render(self, w: torch.Tensor, yaw: float, pitch: float) -> Portrait:
        """Image, colourised mask and depth of latent `w` at (yaw, pitch) radians."""
        return self.portrait(self.forward(w, yaw, pitch))

    def progressive(self, w: torch.Tensor, count: int, yaw: float, pitch: float) -> Portrait:
        """Only the first `count` parts of PROGRESSIVE_ORDER (Fig. 8); all parts past its end."""
        if count >= len(PROGRESSIVE_ORDER):
            return self.render(w, yaw, pitch)
        parts = [CLASS_IDS[name] for name in PROGRESSIVE_ORDER[: max(count, 1)]]
        return self.portrait(self.forward(w, yaw, pitch, active_parts=parts))

    def edit(self, w: torch.Tensor, part: str, what: str, seed: int, yaw: float,
             pitch: float) -> Edit:
        """Part `part`'s shape, texture or both codes taken from the latent of another seed
        (`seed`), with the difference map and D_mean / masked D_mean of Eq. 14 as the
        evaluation computes them (its `evaluate.masked_d_mean` and `edit_region`)."""
        if part not in CLASS_IDS:
            raise ValueError(f"unknown part {part!r}; choose from {', '.join(CLASS_NAMES)}")
        k = CLASS_IDS[part]
        w_new = self.latent(seed + EDIT_STREAM)
        edited_w = self.generator.edit_part(w.to(self.device), k, w_new, what)
        out = self.forward(torch.cat([w.to(self.device), edited_w]), yaw, pitch)
        original, edited = self.portrait(out, 0), self.portrait(out, 1)
        difference = difference_map(out["image"][:1], out["image"][1:])
        settings = self.config.evaluate
        region = edited_region(original.labels[None], edited.labels[None], k,
                               settings.edit_region)
        shown = (difference[0] * 4 * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return Edit(original, edited, np.repeat(shown[..., None], 3, axis=2),
                    float(d_mean(difference)[0]),
                    float(d_mean_masked(difference, region, settings.masked_d_mean)[0]), what,
                    edited_w)

    def turntable(self, w: torch.Tensor, frames: int = 24, pitch: float = PITCH_MEAN
                  ) -> list[np.ndarray]:
        """Frames of the portrait turning across the yaw range and back."""
        low, high = self.poses.yaw
        yaws = [low + (high - low) * (1 - math.cos(2 * math.pi * i / frames)) / 2
                for i in range(frames)]
        return [self.render(w, yaw, pitch).image for yaw in yaws]


def gif_bytes(frames: list[np.ndarray], scale: int = 1, seconds_per_frame: float = 0.08
              ) -> bytes:
    """An endlessly looping GIF of (H, W, 3) uint8 frames, optionally upscaled (nearest)."""
    images = [Image.fromarray(frame) for frame in frames]
    if scale > 1:
        images = [image.resize((image.width * scale, image.height * scale), Image.NEAREST)
                  for image in images]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=int(seconds_per_frame * 1000))
    return buffer.getvalue()


def load_studio(run_dir: str | Path, snapshot: str | Path | None = None,
                device: str = "cpu") -> Studio:
    """The studio over a run's newest (or given) snapshot; a UserError for a run directory
    that is missing, has no snapshot or holds an unreadable one."""
    from harness.errors import UserError
    from harness.runtime.checkpoint import load_generator
    from harness.runtime.device import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found; give a trained run directory "
                        "(python -m harness.train --run-dir RUN_DIR)")
    return Studio(load_generator(run_dir, resolve_device(device, "--device"), snapshot))
