"""Sample grids during training: fixed latents at three fixed cameras, images and masks."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from harness.visualize import colourise_mask, image_grid, save_png, to_uint8_image
from models.camera import PITCH_MEAN, YAW_MEAN, intrinsics, look_at_origin

SAMPLE_SEED = 20_240_101  # fixed latents: grids of every run and iteration are comparable
SAMPLE_COUNT = 6  # identities per grid
SIDE_YAW = 0.45  # radians from frontal for the left and right views (1.5 prior std)
VIEW_NAMES = ("left", "frontal", "right")


def view_cameras(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras of the grid's three views (left, frontal, right): (3, 4, 4) and (3, 3, 3)."""
    angles = torch.tensor([[YAW_MEAN + SIDE_YAW, PITCH_MEAN], [YAW_MEAN, PITCH_MEAN],
                           [YAW_MEAN - SIDE_YAW, PITCH_MEAN]])
    return look_at_origin(angles).to(device), intrinsics().expand(3, 3, 3).to(device)


@torch.no_grad()
def save_sample_grid(generator: torch.nn.Module, path: Path, count: int = SAMPLE_COUNT) -> Path:
    """One row per latent: the image at three views, then the mask at the three views."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    w = generator.sample_latents(count, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    cam2world, intrinsic = view_cameras(device)
    images, masks = [], []
    for view in range(3):
        out = generator(w, cam2world[view : view + 1].expand(count, 4, 4),
                        intrinsic[view : view + 1].expand(count, 3, 3))
        images.append(out["image"])
        masks.append(out["mask"])
    generator.train(was_training)
    tiles = []
    for index in range(count):
        tiles += [to_uint8_image(images[view][index]) for view in range(3)]
        tiles += [colourise_mask(masks[view][index]) for view in range(3)]
    resolution = images[0].shape[-1]
    save_png(image_grid(tiles, columns=6), path, scale=max(1, math.ceil(128 / resolution)))
    return path
