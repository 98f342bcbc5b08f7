"""GAN losses and regularisers against closed forms and independent hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from models.discriminator import DualBranchDiscriminator
from models.losses import (
    d_logistic_loss,
    depth_smoothness_loss,
    ema_update,
    g_nonsaturating_loss,
    mask_consistency_loss,
    path_length_penalty,
    r1_backward,
    r1_penalty,
)


def test_logistic_losses_closed_form() -> None:
    real, fake = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [-1.0]])
    expected_d = (math.log(2) + math.log1p(math.exp(-2))) / 2 + (
        math.log(2) + math.log1p(math.exp(-1))
    ) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    expected_g = (math.log(2) + math.log1p(math.exp(1))) / 2
    assert g_nonsaturating_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)


def test_r1_penalty_matches_the_analytic_gradient() -> None:
    # D(x, m) = sum(a x^2) + sum(c m): grad_x = 2 a x, grad_m = c.
    a, c = 0.5, 3.0
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    m = torch.randn(4, 2, 5, 5, requires_grad=True)
    logits = (a * x**2).flatten(1).sum(1, keepdim=True) + (c * m).flatten(1).sum(1, keepdim=True)
    r1_x, r1_m = r1_penalty(logits, [x, m])
    expected_x = (2 * a * x.detach()).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(r1_x, expected_x)
    assert r1_m.item() == pytest.approx(c**2 * 2 * 5 * 5)
    assert r1_x.requires_grad  # differentiable, so the penalty trains D


def test_r1_backward_sums_each_branchs_inputs() -> None:
    # D = sum(a x) + sum(b x_raw) + sum(c m) + sum(d m_raw): a branch's penalty is the sum of
    # its inputs' squared gradients, ||a||^2 + ||b||^2 and ||c||^2 + ||d||^2 per sample.
    inputs = {"image": torch.randn(2, 3, 8, 8), "raw_image": torch.randn(2, 3, 4, 4),
              "mask": torch.randn(2, 5, 8, 8), "raw_mask": torch.randn(2, 5, 4, 4)}
    inputs = {key: value.requires_grad_(True) for key, value in inputs.items()}
    scale = {"image": 1.0, "raw_image": 2.0, "mask": 3.0, "raw_mask": 4.0}
    logits = sum((scale[key] * value).flatten(1).sum(1, keepdim=True)
                 for key, value in inputs.items())
    image, mask = r1_backward(logits, inputs, 1.0, 1.0)
    assert image.item() == pytest.approx(1 * 3 * 64 + 4 * 3 * 16)
    assert mask.item() == pytest.approx(9 * 5 * 64 + 16 * 5 * 16)
    single = {key: inputs[key] for key in ("image", "mask")}  # a single-resolution D
    image, mask = r1_backward(sum(value.sum() for value in single.values()).view(1, 1), single,
                              1.0, 1.0)
    assert (image.item(), mask.item()) == pytest.approx((3 * 64, 5 * 64))


def test_r1_backward_equals_one_backward_of_the_weighted_sum() -> None:
    torch.manual_seed(0)
    disc = DualBranchDiscriminator(16, 5, channel_base=128, channel_max=8).double()
    real = {"image": torch.randn(4, 3, 16, 16, dtype=torch.double),
            "mask": torch.randn(4, 5, 16, 16, dtype=torch.double)}
    gammas, interval = (10.0, 1000.0), 16

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in disc.parameters() if p.grad is not None]
        disc.zero_grad(set_to_none=True)
        return out

    inputs = {key: value.clone().requires_grad_(True) for key, value in real.items()}
    r1_image, r1_mask = r1_penalty(disc(**inputs), list(inputs.values()))
    ((gammas[0] / 2 * r1_image + gammas[1] / 2 * r1_mask) * interval).backward()
    reference = grads()
    inputs = {key: value.clone().requires_grad_(True) for key, value in real.items()}
    values = r1_backward(disc(**inputs), inputs, *gammas, scale=interval)
    branchwise = grads()
    assert len(reference) == len(branchwise) > 0
    for a, b in zip(reference, branchwise, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.stack(values), torch.stack([r1_image, r1_mask]).detach())


def test_path_length_penalty_for_a_scaled_identity_generator() -> None:
    # images = s * latents: J^T y = s y, so a = s sqrt(mean_slots ||y_slot||^2).
    s, mu = 2.0, torch.tensor(1.0)
    latents = torch.randn(3, 4, 6, requires_grad=True)  # (B, slots, w_dim) -> images (B, 4, 6, 1)
    images = s * latents[..., None]
    torch.manual_seed(7)
    penalty, new_mu = path_length_penalty(images, latents, mu, decay=0.5)
    torch.manual_seed(7)
    y = torch.randn(3, 4, 6, 1) / math.sqrt(6 * 1)
    lengths = s * y[..., 0].pow(2).sum(2).mean(1).sqrt()
    expected_mu = mu + 0.5 * (lengths.mean() - mu)
    torch.testing.assert_close(new_mu, expected_mu)
    torch.testing.assert_close(penalty, (lengths - expected_mu).pow(2).mean())


def test_mask_consistency_is_mse_to_the_average_pooled_final_mask() -> None:
    coarse = torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]]])  # (1, 1, 2, 2)
    final = torch.zeros(1, 1, 4, 4)
    final[..., :2, :2] = torch.tensor([[1.0, 3.0], [1.0, 3.0]])  # block mean 2
    # pooled = [[2, 0], [0, 0]] -> squared errors 1, 0, 0, 1
    assert mask_consistency_loss(coarse, final).item() == pytest.approx(0.5)
    same = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(mask_consistency_loss(same, same + 1.0), torch.tensor(1.0))


def depth_smoothness_reference(depth: np.ndarray) -> float:
    """Eq. 13 with explicit loops: neighbours outside the map are skipped, A = 8 K H W."""
    b, k, h, w = depth.shape
    total = 0.0
    for n in range(b):
        for part in range(k):
            for y in range(h):
                for x in range(w):
                    for d1 in (-1, 0, 1):
                        for d2 in (-1, 0, 1):
                            yy, xx = y + d1, x + d2
                            if (d1, d2) != (0, 0) and 0 <= yy < h and 0 <= xx < w:
                                total += (depth[n, part, y, x] - depth[n, part, yy, xx]) ** 2
    return total / (8 * k * h * w) / b


def test_depth_smoothness_matches_the_loop_reference() -> None:
    depth = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    loss = depth_smoothness_loss(torch.tensor(depth))
    assert loss.item() == pytest.approx(depth_smoothness_reference(depth), rel=1e-10)


def test_depth_smoothness_known_values() -> None:
    h, w, slope = 6, 7, 0.3
    ramp = (slope * torch.arange(w, dtype=torch.float64)).expand(1, 1, h, w)  # varies along x
    # Neighbours with a horizontal step differ by `slope`: (+-1, 0) pairs H (W - 1) each,
    # diagonal pairs (H - 1)(W - 1) each.
    expected = slope**2 * (2 * h * (w - 1) + 4 * (h - 1) * (w - 1)) / (8 * h * w)
    assert depth_smoothness_loss(ramp).item() == pytest.approx(expected, rel=1e-12)
    assert depth_smoothness_loss(torch.full((2, 3, 4, 4), 5.0)).item() == 0.0


def test_ema_update_formula() -> None:
    ema, current = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        current.weight.fill_(3.0)
        current.running_mean.fill_(7.0)
    ema_update(ema, current, beta=0.75)
    torch.testing.assert_close(ema.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 3.0))
    torch.testing.assert_close(ema.running_mean, torch.full((3,), 7.0))  # buffers copied
