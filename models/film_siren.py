"""FiLM-SIREN layers for K parts at once (pi-GAN's conditioned SIREN, as CNeRF uses it per part).

A FiLM-SIREN layer (pi-GAN, Chan et al. 2021, Eqs. 2-3) maps a point feature x to

    phi(x) = sin(gamma(w) * (W x + b) + beta(w)),

with frequencies gamma and phase shifts beta affine in the style w. CNeRF (Ma et al. 2023,
TianxiangMa/CNeRF `volume_renderer.py`, `FiLMSiren` and `LinearLayer`) gives each semantic part
its own stack of such layers; here the K stacks run together as batched matrix products, with
points laid out (B, K, P, C) (a part axis of size 1 broadcasts over the K parts).

Initialisation follows CNeRF (pi-GAN's): weights of a first layer U(-1/in, 1/in), of later
layers and of the small heads U(-sqrt(6/in)/25, sqrt(6/in)/25) ("siren"), and of the feature head
and the FiLM maps 0.25 * Kaiming-normal (leaky ReLU slope 0.2, fan in) ("kaiming"); biases
U(-1/sqrt(in), 1/sqrt(in)); gamma = 15 (A w + a) + 30 and beta = 0.25 (A' w + a').
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Init = Literal["first", "siren", "kaiming"]
GAMMA_SCALE, GAMMA_BIAS = 15.0, 30.0  # CNeRF: gamma = 15 * linear(w) + 30 (frequencies)
BETA_SCALE = 0.25  # CNeRF: beta = 0.25 * linear(w) (phase shifts)


def _weight(num_parts: int, out_features: int, in_features: int, init: Init) -> torch.Tensor:
    """(K, out, in) initial weights (see the module docstring)."""
    if init == "kaiming":
        weight = torch.empty(num_parts, out_features, in_features)
        for part in weight:
            nn.init.kaiming_normal_(part, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        return 0.25 * weight
    bound = 1 / in_features if init == "first" else math.sqrt(6 / in_features) / 25
    return torch.empty(num_parts, out_features, in_features).uniform_(-bound, bound)


class PartDense(nn.Module):
    """K independent linear layers on point features: (B, K or 1, P, in) -> (B, K, P, out)."""

    def __init__(self, num_parts: int, in_features: int, out_features: int, init: Init) -> None:
        super().__init__()
        self.weight = nn.Parameter(_weight(num_parts, out_features, in_features, init))
        bound = 1 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(num_parts, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W_k^T + b_k for each part k."""
        return torch.matmul(x, self.weight.transpose(1, 2)) + self.bias[:, None, :]


class PartFiLMSiren(nn.Module):
    """K independent FiLM-SIREN layers, each modulated by its part's style (pi-GAN Eq. 3)."""

    def __init__(
        self, num_parts: int, in_features: int, out_features: int, w_dim: int, first: bool = False
    ) -> None:
        super().__init__()
        self.linear = PartDense(num_parts, in_features, out_features, "first" if first else "siren")
        self.gamma = PartDense(num_parts, w_dim, out_features, "kaiming")
        self.beta = PartDense(num_parts, w_dim, out_features, "kaiming")

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (B, K or 1, P, in), w (B, K, w_dim) -> (B, K, P, out)."""
        style = w[:, :, None, :]  # (B, K, 1, w_dim)
        gamma = GAMMA_SCALE * self.gamma(style) + GAMMA_BIAS  # (B, K, 1, out)
        beta = BETA_SCALE * self.beta(style)  # (B, K, 1, out)
        return torch.sin(gamma * self.linear(x) + beta)
