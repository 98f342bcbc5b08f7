"""Part disentanglement (3D-SSGAN Eq. 14): D_mean and masked D_mean, and the edit loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.config import load_config
from harness.data.classes import CLASS_IDS
from harness.metrics.disentangle import (
    MAP_SAMPLE_AXIS,
    PARTS,
    VIEWS,
    d_mean,
    d_mean_masked,
    difference_map,
    edited_region,
    evaluate_disentanglement,
)
from models.registry import get_model


def test_d_mean_matches_eq14_computed_independently() -> None:
    """Eq. 14 by explicit loops over c, i, j on fixed arrays, pixel values in [0, 1]."""
    rng = np.random.default_rng(3)
    original = rng.uniform(-1, 1, size=(2, 3, 5, 4)).astype(np.float32)  # [-1, 1] images
    edited = rng.uniform(-1, 1, size=(2, 3, 5, 4)).astype(np.float32)
    region = rng.uniform(size=(2, 5, 4)) < 0.3
    for b in range(2):
        p_orig, p_edit = (original[b] + 1) / 2, (edited[b] + 1) / 2  # to [0, 1]
        total, outside, outside_count = 0.0, 0.0, 0
        for i in range(4):  # W
            for j in range(5):  # H
                pixel = sum(abs(float(p_edit[c, j, i]) - float(p_orig[c, j, i]))
                            for c in range(3))
                total += pixel
                if not region[b, j, i]:
                    outside += pixel / 3
                    outside_count += 1
        expected = total / (3 * 4 * 5)
        difference = difference_map(torch.from_numpy(original), torch.from_numpy(edited))
        assert d_mean(difference)[b].item() == pytest.approx(expected, rel=1e-5)
        masked = d_mean_masked(difference, torch.from_numpy(region))[b].item()
        assert masked == pytest.approx(outside / (4 * 5), rel=1e-5)  # the paper's: over W H
        outside_only = d_mean_masked(difference, torch.from_numpy(region), "outside")[b].item()
        assert outside_only == pytest.approx(outside / outside_count, rel=1e-5)


def test_masked_mean_drops_the_region_and_averages_over_the_image_or_the_rest() -> None:
    """A 2x2 map: the edited pixel's difference is dropped; the paper's masked D_mean divides
    the rest by all 4 pixels (Fig. 4's mean of the masked map), "outside" by the other 3."""
    difference = torch.tensor([[[0.9, 0.1], [0.2, 0.3]]])
    region = torch.tensor([[[True, False], [False, False]]])
    assert d_mean(difference).item() == pytest.approx(1.5 / 4)
    assert d_mean_masked(difference, region).item() == pytest.approx(0.6 / 4)
    assert d_mean_masked(difference, region, "outside").item() == pytest.approx(0.6 / 3)
    assert d_mean_masked(difference, torch.ones_like(region)).item() == 0
    assert math.isnan(d_mean_masked(difference, torch.ones_like(region), "outside").item())


def test_edited_region_is_the_union_original_or_edited_mask() -> None:
    mouth = CLASS_IDS["mouth"]
    before = torch.tensor([[[mouth, 0, 0]]])
    after = torch.tensor([[[0, mouth, CLASS_IDS["nose"]]]])
    assert edited_region(before, after, mouth).tolist() == [[[True, True, False]]]
    assert edited_region(before, after, mouth, "original").tolist() == [[[True, False, False]]]
    assert edited_region(before, after, mouth, "edited").tolist() == [[[False, True, False]]]


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    """A randomly initialised smoke-sized 3D-SSGAN generator (weights need not be trained)."""
    config = load_config(None, "smoke")
    torch.manual_seed(0)
    return get_model("3dssgan").build_generator(config.model).eval()


def test_evaluation_covers_every_part_view_and_keeps_maps(generator: torch.nn.Module) -> None:
    result = evaluate_disentanglement(generator, count=3, seed=0, batch_size=2, keep_maps=2)
    rows = result.artifacts["rows"]
    assert len(rows) == 3 * len(PARTS) * len(VIEWS)
    assert {(r["part"], r["view"]) for r in rows} == {(p, v) for p in PARTS for v in VIEWS}
    assert sorted({r["sample"] for r in rows}) == [0, 1, 2]
    for part in PARTS:
        for view in VIEWS:
            values = [r["d_mean"] for r in rows if r["part"] == part and r["view"] == view]
            assert result.values[f"d_mean/{part}@{view}"] == pytest.approx(np.mean(values))
            assert 0 < result.values[f"d_mean/{part}@{view}"] < 1
    maps = result.artifacts["maps"]
    resolution = generator.config.resolution
    assert maps["original"].shape == (2, 2, 3, resolution, resolution)  # (V, S, 3, H, W)
    assert maps["edited"].shape == (2, 5, 2, 3, resolution, resolution)  # (V, P, S, 3, H, W)
    assert maps["difference"].shape == maps["region"].shape == (2, 5, 2, resolution, resolution)
    assert all(maps[key].shape[axis] == 2 for key, axis in MAP_SAMPLE_AXIS.items())
    assert result.images == 3 * 2 * 6


def test_edits_go_through_the_models_edit_part(generator: torch.nn.Module) -> None:
    """A model whose edit changes nothing (as a holistic model may choose) scores exactly 0."""

    class NoEdit(type(generator)):
        def edit_part(self, w, part, w_new, what="part"):  # noqa: ANN001, ANN201
            return w

    frozen = NoEdit(generator.config)
    frozen.load_state_dict(generator.state_dict())
    frozen.eval()
    result = evaluate_disentanglement(frozen, count=2, seed=0, batch_size=2, keep_maps=0)
    assert all(value == 0 for key, value in result.values.items()
               if key.startswith(("d_mean/", "d_mean_masked/")))
    assert result.values["d_mean_masked_average"] == "image"  # the paper's, by default
    assert result.artifacts["maps"] == {}
