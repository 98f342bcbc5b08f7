"""Where generated images' cameras come from: the paper's pose prior or the data's poses.

Training (`train.fake_cameras`) and evaluation (`evaluate.cameras`) draw cameras through the
same samplers: (n, random stream, device) -> cam2world (n, 4, 4), intrinsics (n, 3, 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from harness.config import ExperimentConfig
from harness.data.loading import prepared_dataset_dir
from harness.data.prepared import mirror_camera
from models.camera import CameraPrior, intrinsics, look_at_origin

CameraSampler = Callable[[int, torch.Generator, torch.device], tuple[torch.Tensor, torch.Tensor]]


def sample_cameras(
    batch: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras from the paper's prior: cam2world (B, 4, 4) and intrinsics (B, 3, 3)."""
    angles = CameraPrior().sample(batch, generator)
    return look_at_origin(angles).to(device), intrinsics().expand(batch, 3, 3).to(device)


def dataset_camera_sampler(config: ExperimentConfig) -> CameraSampler:
    """Cameras drawn uniformly from the training split's poses (mirrored half the time when
    the data is x-flipped, as in training). The data must be prepared already."""
    path = prepared_dataset_dir(config.data, config.model.resolution)
    train = np.load(path / "split.npy") == 0
    cameras = torch.from_numpy(np.load(path / "cameras.npy")[train])  # (N, 4, 4)
    intrinsic = torch.from_numpy(np.load(path / "intrinsics.npy")[train])  # (N, 3, 3)
    flip = config.data.flip

    def sample(n: int, stream: torch.Generator, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(cameras), (n,), generator=stream)
        cam2world = cameras[index]
        if flip:
            mirrored = torch.rand(n, generator=stream) < 0.5
            cam2world = torch.where(mirrored[:, None, None], mirror_camera(cam2world), cam2world)
        return cam2world.to(device), intrinsic[index].to(device)

    return sample


def camera_sampler(source: Literal["prior", "dataset"], config: ExperimentConfig
                   ) -> CameraSampler:
    """The sampler of a camera source: "prior" (the paper's Gaussian yaw/pitch) or "dataset"."""
    if source == "dataset":
        return dataset_camera_sampler(config)
    return sample_cameras
