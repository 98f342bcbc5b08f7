"""Depth-per-class metric (added through the metric registry alone): per-class depth sums,
the data's per-class means, and generated depth against the data's with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.config import load_config
from harness.data.classes import CLASS_IDS, CLASS_NAMES, NUM_CLASSES
from harness.data.loading import prepared_dataset_dir
from harness.metrics import registry
from harness.metrics.depth import class_depth_sums, data_class_depths, run
from harness.metrics.generation import MetricContext
from models.camera import pixel_rays


class DepthReplay(torch.nn.Module):
    """A stand-in generator that renders given class-id and z-depth maps, in order, with the
    depth as a renderer gives it: the distance along each unit ray (z / cos)."""

    def __init__(self, class_ids: torch.Tensor, z: torch.Tensor | None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the metric reads the device here
        self.class_ids, self.z, self.next = class_ids, z, 0

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(n, 1, 1)

    def forward(self, w, cam2world, intrinsic):
        rows = slice(self.next, self.next + len(w))
        self.next += len(w)
        out = {"mask": F.one_hot(self.class_ids[rows], NUM_CLASSES).permute(0, 3, 1, 2) * 2.0 - 1}
        if self.z is not None:
            z = self.z[rows]
            _, directions = pixel_rays(cam2world, intrinsic, z.shape[-1])
            cosine = (directions * cam2world[:, None, :3, 2]).sum(-1).view_as(z)
            out["depth"] = (z / cosine)[:, None]
        return out


def test_class_depth_sums_on_fixed_arrays() -> None:
    ids = torch.tensor([[0, 0, 1], [1, 2, 2]])
    depth = torch.tensor([[1.0, 3.0, 2.0], [4.0, 5.0, 7.0]])
    sums, counts = class_depth_sums(depth, ids)
    assert sums[:3].tolist() == [4.0, 6.0, 12.0] and counts[:3].tolist() == [2.0, 2.0, 2.0]
    assert sums[3:].sum() == 0 and counts[3:].sum() == 0


def test_generated_depth_against_the_data(smoke_overrides) -> None:
    config = load_config(None, "smoke", smoke_overrides)
    path = prepared_dataset_dir(config.data, config.model.resolution)
    train = np.load(path / "split.npy") == 0
    masks = torch.from_numpy(np.load(path / "masks.npy")[train]).long()
    z = torch.from_numpy(np.load(path / "depth.npy")[train].astype(np.float64))
    data = data_class_depths(config)
    face = masks == CLASS_IDS["face"]
    assert data[CLASS_IDS["face"]] == pytest.approx(float(z[face].mean()))

    def measured(generator: torch.nn.Module) -> dict:
        return run(MetricContext(generator, config, len(masks), seed=0)).values

    same = measured(DepthReplay(masks, z.float()))
    assert same["depth/class_mae"] == pytest.approx(0.0, abs=1e-5)
    assert same["depth/offset_mae"] == pytest.approx(0.0, abs=1e-5)
    for k in map(int, masks.unique()):
        assert same[f"depth/class_mean/{CLASS_NAMES[k]}"] == pytest.approx(data[k], abs=1e-5)
    behind = measured(DepthReplay(masks, z.float() + 0.1))  # every pixel 0.1 further away
    assert behind["depth/class_mae"] == pytest.approx(0.1, abs=1e-5)
    assert behind["depth/offset_mae"] == pytest.approx(0.0, abs=1e-5)  # the head moved whole
    nose = masks == CLASS_IDS["nose"]
    sunk = measured(DepthReplay(masks, z.float() + 0.2 * nose))  # the nose 0.2 further back
    shares = {k: float((masks == k).sum()) for k in map(int, masks.unique())
              if k != CLASS_IDS["background"]}
    nose_share = shares[CLASS_IDS["nose"]] / sum(shares.values())
    assert sunk["depth/class_mae"] == pytest.approx(0.2 * nose_share, abs=1e-5)
    parts = sum(v for k, v in shares.items() if k != CLASS_IDS["face"])
    assert sunk["depth/offset_mae"] == pytest.approx(
        0.2 * shares[CLASS_IDS["nose"]] / parts, abs=1e-5)
    flat = measured(DepthReplay(masks, None))  # a 2D model
    assert flat == {"depth/not_applicable": "the generator renders no depth map (a 2D model)"}


def test_the_metric_is_one_registration() -> None:
    depth = registry.get("depth")
    assert "depth" in registry.names() and "depth" not in registry.names(default_only=True)
    assert registry.metric_of("depth/class_mean/nose") == "depth"
    assert registry.goals()["depth/class_mae"] == "min"
    assert registry.function(depth.run) is run
