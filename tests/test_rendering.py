"""NeRF rendering helpers: depths, points, weights (Eqs. 2-3), accumulation (Eq. 4), depth."""

from __future__ import annotations

import math

import pytest
import torch

from models.camera import FAR, NEAR
from models.rendering import (
    accumulate,
    expected_depth,
    nerf_weights,
    quantile_depths,
    ray_depths,
    ray_points,
)


def test_ray_depths_stratified_one_sample_per_bin_and_reproducible() -> None:
    t = ray_depths(2, 5, 4, stratified=True, generator=torch.Generator().manual_seed(0))
    again = ray_depths(2, 5, 4, stratified=True, generator=torch.Generator().manual_seed(0))
    assert t.shape == (2, 5, 4) and t.dtype == torch.float32
    torch.testing.assert_close(t, again, rtol=0, atol=0)
    width = (FAR - NEAR) / 4
    bins = torch.floor((t - NEAR) / width)  # (B, rays, N) bin of each sample
    torch.testing.assert_close(bins, torch.arange(4.0).expand(2, 5, 4), rtol=0, atol=0)
    assert not torch.allclose(t[0, 0], t[0, 1]), "rays must be jittered independently"


def test_ray_depths_test_mode_is_bin_centres() -> None:
    t = ray_depths(1, 3, 4, near=1.0, far=3.0, stratified=False, dtype=torch.float64)
    expected = torch.tensor([1.25, 1.75, 2.25, 2.75], dtype=torch.float64)
    torch.testing.assert_close(t, expected.expand(1, 3, 4), rtol=0, atol=1e-15)


def test_ray_points_lie_at_distance_t_along_the_ray() -> None:
    origins = torch.tensor([[[0.0, 0.0, 4.0], [1.0, 2.0, 3.0]]])  # (1, 2, 3)
    directions = torch.tensor([[[0.0, 0.0, -1.0], [1.0, 1.0, 0.0]]])
    directions = torch.nn.functional.normalize(directions, dim=-1)  # (1, 2, 3)
    t = torch.tensor([[[3.0, 5.0], [0.0, 2.0]]])  # (1, 2, 2)
    points = ray_points(origins, directions, t)  # (1, 2, 2, 3)
    torch.testing.assert_close(points[0, 0, 1], torch.tensor([0.0, 0.0, -1.0]))
    s = math.sqrt(2.0)
    torch.testing.assert_close(points[0, 1, 1], torch.tensor([1.0 + s, 2.0 + s, 3.0]))
    torch.testing.assert_close((points - origins[:, :, None]).norm(dim=-1), t)


def test_nerf_weights_hand_computed_three_samples() -> None:
    sigma = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    t = torch.tensor([[[0.0, 0.5, 1.5]]], dtype=torch.float64)  # deltas 0.5, 1.0, last
    first, second = 1 - math.exp(-0.5), math.exp(-0.5) * (1 - math.exp(-2.0))
    # Default: the last interval is infinite, so the last sample takes what is left.
    expected = torch.tensor([[[first, second, math.exp(-2.5)]]], dtype=torch.float64)
    torch.testing.assert_close(nerf_weights(sigma, t), expected, rtol=1e-14, atol=0)
    assert nerf_weights(sigma, t).sum().item() == pytest.approx(1.0, abs=1e-15)
    # A finite last interval (here the bin width 1.0) lets light through the back.
    third = math.exp(-2.5) * (1 - math.exp(-3.0))
    expected = torch.tensor([[[first, second, third]]], dtype=torch.float64)
    torch.testing.assert_close(nerf_weights(sigma, t, last_delta=1.0), expected, rtol=1e-14, atol=0)


def test_nerf_weights_sum_at_most_one_and_stable() -> None:
    generator = torch.Generator().manual_seed(1)
    t = ray_depths(3, 7, 12, stratified=True, generator=generator)
    sigma = torch.rand(3, 7, 12, generator=generator) * torch.logspace(-3, 3, 12)
    sigma[0, 0] = 0.0  # empty ray
    sigma[0, 1, 1:] = 1e30  # opaque from the second sample on
    w = nerf_weights(sigma, t)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert (w.sum(-1) <= 1 + 1e-6).all()
    assert w[0, 0].abs().max() == 0
    torch.testing.assert_close(w[0, 1, 2:], torch.zeros(10))
    w_bin = nerf_weights(sigma, t, last_delta=(FAR - NEAR) / 12)
    assert (w_bin.sum(-1) <= w.sum(-1) + 1e-6).all()


def test_accumulate_and_expected_depth() -> None:
    generator = torch.Generator().manual_seed(2)
    w = torch.rand(2, 3, 5, generator=generator, dtype=torch.float64) / 5  # (B, rays, N)
    values = torch.randn(2, 3, 5, 4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(accumulate(w, values), (w[..., None] * values).sum(2))
    t = torch.linspace(3.0, 5.0, 5, dtype=torch.float64).expand(1, 2, 5)
    opaque_third = torch.tensor([[[0, 0, 1.0, 0, 0], [0, 0, 0, 0, 0]]], dtype=torch.float64)
    # A hit at the third sample reads t_3; an empty ray reads its last sample's depth.
    torch.testing.assert_close(
        expected_depth(opaque_third, t), torch.tensor([[4.0, 5.0]], dtype=torch.float64)
    )


def test_quantile_depths_put_equal_weight_where_the_ray_weight_is() -> None:
    t = ray_depths(1, 3, 10, stratified=False)  # bins of 0.2 on [3, 5]
    w = torch.zeros(1, 3, 10, dtype=torch.float64)
    w[0, 0, 4] = 1.0  # all weight in the bin [3.8, 4.0]
    w[0, 1] = 0.1  # uniform along the ray
    w[0, 2, 2], w[0, 2, 7] = 0.2, 0.6  # two surfaces, total 0.8
    depths, weights = quantile_depths(w, 4)
    torch.testing.assert_close(depths[0, 0], torch.tensor([3.825, 3.875, 3.925, 3.975],
                                                          dtype=torch.float64))
    torch.testing.assert_close(depths[0, 1], 3 + 2 * (torch.arange(4, dtype=torch.float64)
                                                      + 0.5) / 4)
    # 0.8 in four quarters: one in the first surface's bin [3.4, 3.6], three in the second's
    assert 3.4 < depths[0, 2, 0] < 3.6
    assert ((depths[0, 2, 1:] > 4.4) & (depths[0, 2, 1:] < 4.6)).all()
    torch.testing.assert_close(weights.sum(-1), w.sum(-1))  # the total weight is kept
    assert (depths.diff(dim=-1) >= 0).all()
    assert t.shape == w.shape


