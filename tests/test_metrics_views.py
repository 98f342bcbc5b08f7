"""View consistency: the depth warp on the synthetic renderer's 3D-consistent views.

The synthetic portraits are exact renders of 3D scenes with per-pixel camera-space z depth, so
warping one view into another through that depth leaves only interpolation error; pairs that
are inconsistent on purpose (another identity, a shifted image) must score clearly worse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import load_config
from harness.data.synthetic import ensure_synthetic
from harness.data.synthetic_render import render
from harness.data.synthetic_scenes import sample_identity, stack_scenes
from harness.metrics.views import consistency, evaluate_views, warp, z_depth
from models.camera import CameraPrior, intrinsics, look_at_origin, pixel_rays
from models.registry import get_model

PAIRS, RESOLUTION = 6, 64


@pytest.fixture(scope="module")
def views() -> dict[str, torch.Tensor]:
    """PAIRS identities, each rendered at two prior poses under the same light.

    Keys a_*/b_*: image (N, 3, R, R) in [-1, 1], mask (N, R, R) ids, depth (N, R, R) z, cam.
    """
    scenes = stack_scenes([sample_identity(np.random.default_rng([7, i])).repeat(2)
                           for i in range(PAIRS)])
    cameras = look_at_origin(CameraPrior().sample(2 * PAIRS, torch.Generator().manual_seed(1)))
    light = torch.nn.functional.normalize(torch.tensor([0.2, 0.5, 1.0]), dim=0)
    out = render(scenes, cameras, light.expand(2 * PAIRS, 3), RESOLUTION)
    image = out["image"].permute(0, 3, 1, 2) * 2 - 1
    data = {}
    for name, index in (("a", slice(0, None, 2)), ("b", slice(1, None, 2))):
        data |= {f"{name}_image": image[index], f"{name}_mask": out["mask"][index],
                 f"{name}_depth": out["depth"][index], f"{name}_cam": cameras[index]}
    return data


def _score(v: dict[str, torch.Tensor], depth_kind: str = "z", **replace: torch.Tensor
           ) -> dict[str, float]:
    v = {**v, **replace}
    pair = consistency(v["a_image"], v["a_mask"], v["a_depth"], v["a_cam"], v["b_image"],
                       v["b_mask"], v["b_depth"], v["b_cam"], intrinsics(), depth_kind)
    return {key: float(value.nanmean()) for key, value in pair.items()}


def test_a_view_warped_into_itself_is_exact(views: dict[str, torch.Tensor]) -> None:
    same = {key.replace("a_", "b_"): value for key, value in views.items() if key[0] == "a"}
    score = _score(views, **same)
    assert score["photometric_l1"] < 1e-5
    assert score["mask_miou"] == pytest.approx(1.0)


def test_consistent_views_score_near_zero_inconsistent_ones_do_not(
    views: dict[str, torch.Tensor],
) -> None:
    consistent = _score(views)
    other = torch.roll(torch.arange(PAIRS), 1)  # view B of another identity
    swapped = _score(views, b_image=views["b_image"][other], b_mask=views["b_mask"][other],
                     b_depth=views["b_depth"][other])
    shifted = _score(views, b_image=views["b_image"].roll(4, -1),
                     b_mask=views["b_mask"].roll(4, -1))
    print(f"consistent {consistent}, other identity {swapped}, shifted by 4 px {shifted}")
    # Left over for consistent views: bilinear resampling at 64 px, view-dependent highlights.
    assert consistent["photometric_l1"] < 0.04
    assert consistent["mask_miou"] > 0.75
    for bad in (swapped, shifted):
        assert bad["photometric_l1"] > 2.5 * consistent["photometric_l1"]
        assert bad["mask_miou"] < consistent["mask_miou"] - 0.25


def test_ray_distance_and_z_depth_conventions_agree(views: dict[str, torch.Tensor]) -> None:
    """The generator's depth is distance along the ray; converting z to it changes nothing."""

    def ray_distance(z: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        _, directions = pixel_rays(cam, intrinsics(), RESOLUTION)
        cosine = (directions * cam[:, None, :3, 2]).sum(-1).view_as(z)
        return z / cosine

    a_ray = ray_distance(views["a_depth"], views["a_cam"])
    assert torch.allclose(z_depth(a_ray, views["a_cam"], intrinsics(), "ray"), views["a_depth"],
                          atol=1e-4)
    assert not torch.allclose(a_ray, views["a_depth"], atol=1e-2)  # the conventions do differ
    by_ray = _score(views, "ray", a_depth=a_ray[:, None],  # (B, 1, r, r) as the generator's
                    b_depth=ray_distance(views["b_depth"], views["b_cam"]))
    assert by_ray == pytest.approx(_score(views), abs=1e-5)


def test_occluded_and_out_of_frame_pixels_are_not_co_visible(
    views: dict[str, torch.Tensor],
) -> None:
    args = (views["b_image"], views["b_mask"], views["a_depth"], views["a_cam"], views["b_cam"],
            intrinsics())
    without = warp(*args, depth_kind="z").valid
    with_test = warp(*args, depth_b=views["b_depth"], depth_kind="z").valid
    assert (with_test <= without).all() and with_test.sum() < without.sum()
    far_b = look_at_origin(torch.tensor([[np.pi / 2 + 1.2, np.pi / 2]])).expand(PAIRS, 4, 4)
    assert warp(views["b_image"], views["b_mask"], views["a_depth"], views["a_cam"], far_b,
                intrinsics(), depth_kind="z").valid.float().mean() < without.float().mean()


def test_prepared_data_views_of_one_identity_agree_in_mask(data_cache: Path) -> None:
    """The prepared dataset's own multi-view samples (lights differ per view, so only the
    masks are compared): one identity's views agree far better than two identities'."""
    path = ensure_synthetic(identities=24, views=2, resolution=32, seed=0,
                            cache_dir=data_cache / "synthetic")
    masks = torch.from_numpy(np.load(path / "masks.npy")).long()
    depth = torch.from_numpy(np.load(path / "depth.npy").astype(np.float32))
    cams = torch.from_numpy(np.load(path / "cameras.npy"))
    identity = np.load(path / "identity.npy")
    a, b = np.arange(0, len(identity), 2), np.arange(1, len(identity), 2)
    assert (identity[a] == identity[b]).all()
    zeros = torch.zeros(len(a), 3, 32, 32)

    def miou(b_index: np.ndarray) -> float:
        pair = consistency(zeros, masks[a], depth[a], cams[a], zeros, masks[b_index],
                           depth[b_index], cams[b_index], intrinsics(), depth_kind="z")
        return float(pair["mask_miou"].nanmean())

    same, different = miou(b), miou(np.roll(b, 1))
    print(f"prepared 32 px views: mIoU same identity {same:.3f}, different {different:.3f}")
    assert same > 0.6 and same > different + 0.2


def test_generator_metric_is_finite_and_seeded() -> None:
    config = load_config(None, "smoke")
    torch.manual_seed(0)
    g = get_model("3dssgan").build_generator(config.model).eval()
    first = evaluate_views(g, count=4, seed=3, batch_size=4)
    again = evaluate_views(g, count=4, seed=3, batch_size=2)  # batching changes nothing
    assert first.values == pytest.approx(again.values, rel=1e-4)
    assert 0 <= first.values["view/photometric_l1"] <= 1
    assert 0 <= first.values["view/mask_miou"] <= 1
    assert first.images == 8


def test_a_model_without_depth_is_recorded_as_not_applicable() -> None:
    """ssgan2d renders no depth: both values stay null (stable keys) and the reason is kept."""
    from harness.metrics.views import NO_DEPTH, NOT_APPLICABLE

    config = load_config(None, "smoke", ["model.name=ssgan2d"])
    torch.manual_seed(0)
    g = get_model("ssgan2d").build_generator(config.model).eval()
    result = evaluate_views(g, count=2, seed=0, batch_size=2)
    assert result.values == {"view/photometric_l1": None, "view/mask_miou": None,
                             NOT_APPLICABLE: NO_DEPTH}
    assert result.num_samples == 0
