"""Camera sources of generated images: the pose prior, or the data's poses (training and eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.config import load_config
from harness.data.loading import open_dataset, prepared_dataset_dir
from harness.data.prepared import mirror_camera
from harness.runtime import cameras
from harness.training.loop import training_loop


def _data_poses(config) -> torch.Tensor:
    path = prepared_dataset_dir(config.data, config.model.resolution)
    train = np.load(path / "split.npy") == 0
    poses = torch.from_numpy(np.load(path / "cameras.npy")[train])
    return torch.cat([poses, mirror_camera(poses)])


def _is_data_pose(cam2world: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """(B,) whether each camera equals one of `poses`."""
    return (cam2world[:, None] - poses[None]).abs().flatten(2).amax(-1).min(-1).values < 1e-6


def test_training_with_dataset_cameras_renders_only_data_poses(
        tmp_path: Path, smoke_overrides, monkeypatch) -> None:
    config = load_config(None, "smoke", [*smoke_overrides, "train.iterations=2",
                                         "train.fake_cameras=dataset"])
    seen: list[torch.Tensor] = []
    original = cameras.dataset_camera_sampler

    def recording(config):  # the loop's sampler, recording what it hands to the generator
        sample = original(config)

        def wrapped(n, stream, device):
            cam2world, intrinsic = sample(n, stream, device)
            seen.append(cam2world)
            return cam2world, intrinsic
        return wrapped

    monkeypatch.setattr(cameras, "dataset_camera_sampler", recording)
    training_loop(config, tmp_path / "run", progress=False)
    # a D step and a G step per iteration, and the lazy path-length step at iteration 0
    assert len(seen) == 2 * 2 + 1
    poses = _data_poses(config)
    assert all(_is_data_pose(batch, poses).all() for batch in seen)


def test_prior_cameras_are_not_data_poses(smoke_overrides) -> None:
    config = load_config(None, "smoke", [*smoke_overrides, "train.iterations=1"])
    open_dataset(config.data, config.model.resolution)  # prepare the data
    sample = cameras.camera_sampler("prior", config)
    cam2world, _ = sample(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert not _is_data_pose(cam2world, _data_poses(config)).any()
