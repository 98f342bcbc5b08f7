"""Per-part 2D generators G_k (3D-SSGAN Sec. 3.2, Fig. 3; SSGAN's local generators).

Each part k maps fixed Fourier features of an H x W grid through a small learned linear map
("coarse MLP") and a stack of modulated 1x1 convs (an MLP applied per pixel) to a feature map
f_k^2d, a pseudo-depth map d_k^2d and a density map sigma_k^2d:

    Fourier features (F ch) -> coarse MLP (`coarse_mlp_layers` linear 1x1, hidden ch)
      -> `base_layers` modulated 1x1 reading W^base
      -> `shape_layers` modulated 1x1 reading W_s^k  -> ToDepth, ToDensity (shape branch)
      -> `texture_layers` modulated 1x1 reading W_t^k -> ToFeature

SSGAN (`models/semantic_stylegan.py`, `LocalGenerator`) uses 10 modulated 1x1 layers without
noise: 2 base, 4 shape ("depth_layers=6"), 4 texture, with depth taken after the shape layers
and features after the last; its heads are unmodulated linear 1x1 layers (`ToRGB` without
style), here `EqualConv2d` 1x1. 3D-SSGAN adds ToDensity, "similar to ToFeature" (Sec. 3.4),
taken from the shape branch like depth since density is the part's soft mask (shape, not
texture). Density is made non-negative with softplus (smooth, never dead, unlike ReLU): it
feeds NeRF densities (Eq. 2) and the mask renderer (Eq. 10).

On the "one-layer MLP for coarse structure" (3D-SSGAN Sec. 3.2): `coarse_mlp_layers` is the
number of learned linear 1x1 layers between the fixed Fourier features and the modulated
stack (SSGAN's `PositionEmbedding` has one such projection). SSGAN's training script calls its
2 `base_layers` "layers with shared coarse structure code", so the other reading of the paper
is `base_layers=1`; both are parameters.

`LocalGenerators` runs all K parts at once with batched matrix products (a 1x1 conv is a
matmul); `LocalGenerator` is the per-part reference built from the shared StyleGAN2 blocks,
and `LocalGenerators.part(k)` extracts part k as one, so tests check that both agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import EqualConv2d, FourierFeatures, StyledConv, bias_leaky_relu


def layer_codes(base_layers: int, shape_layers: int, texture_layers: int) -> list[str]:
    """Which code each modulated layer reads, in order: "base", "shape" or "texture"."""
    return ["base"] * base_layers + ["shape"] * shape_layers + ["texture"] * texture_layers


def coarse_mlp(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Linear layers with a leaky ReLU between them (none after the last)."""
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1:
            x = bias_leaky_relu(x)
    return x


class LocalGenerator(nn.Module):
    """One part's generator G_k (reference implementation, one part at a time)."""

    def __init__(
        self,
        w_dim: int,
        hidden: int = 64,
        fourier_channels: int = 64,
        out_channels: int = 256,
        base_layers: int = 2,
        shape_layers: int = 4,
        texture_layers: int = 4,
        coarse_mlp_layers: int = 1,
        max_frequency: float = 16.0,
    ) -> None:
        super().__init__()
        self.codes = layer_codes(base_layers, shape_layers, texture_layers)
        self.shape_end = base_layers + shape_layers  # layers before the depth/density heads
        self.fourier = FourierFeatures(fourier_channels, max_frequency)
        self.coarse = nn.ModuleList(
            EqualConv2d(fourier_channels if i == 0 else hidden, hidden, 1)
            for i in range(coarse_mlp_layers)
        )
        self.convs = nn.ModuleList(
            StyledConv(hidden, hidden, 1, w_dim, inject_noise=False) for _ in self.codes
        )
        self.to_feature = EqualConv2d(hidden, out_channels, 1)
        self.to_depth = EqualConv2d(hidden, 1, 1)
        self.to_density = EqualConv2d(hidden, 1, 1)

    def forward(
        self,
        w_base: torch.Tensor,
        w_shape: torch.Tensor,
        w_texture: torch.Tensor,
        resolution: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes (B, w_dim) each -> feature (B, C, H, W), depth and density (B, 1, H, W) each."""
        styles = {"base": w_base, "shape": w_shape, "texture": w_texture}
        x = self.fourier(w_base.shape[0], resolution, resolution)  # (B, F, H, W)
        x = coarse_mlp(self.coarse, x)  # (B, hidden, H, W)
        shape_x = x  # input of the heads on the shape branch (the coarse output if no layers)
        for i, (conv, code) in enumerate(zip(self.convs, self.codes, strict=True)):
            x = conv(x, styles[code])
            if i == self.shape_end - 1:
                shape_x = x
        density = F.softplus(self.to_density(shape_x))
        return self.to_feature(x), self.to_depth(shape_x), density


class PartLinear(nn.Module):
    """K independent equalised-lr linear 1x1 layers: (B, K or 1, in, H, W) -> (B, K, out, H, W)."""

    def __init__(self, num_parts: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_parts, out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(num_parts, out_channels))
        self.scale = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """A part axis of size 1 broadcasts over the K parts. `channels_last` stores the output
        as (B, K, H, W, out) in memory (the same values, viewed as (B, K, out, H, W))."""
        b, k, c, h, w = x.shape
        weight, pixels = self.weight * self.scale, x.reshape(b, k, c, h * w)
        if channels_last:  # (B, K, HW, out) = x^T W^T
            out = torch.matmul(pixels.transpose(-1, -2), weight.transpose(-1, -2))
            out = out + self.bias[None, :, None, :]
            return out.reshape(b, out.shape[1], h, w, -1).permute(0, 1, 4, 2, 3)
        out = torch.matmul(weight, pixels) + self.bias[None, :, :, None]  # (B, K, out, HW)
        return out.reshape(b, out.shape[1], -1, h, w)

    @torch.no_grad()
    def part(self, k: int) -> EqualConv2d:
        """Part k's layer as an `EqualConv2d` 1x1 with the same weights."""
        out_channels, in_channels = self.weight.shape[1:]
        layer = EqualConv2d(in_channels, out_channels, 1).to(self.weight)
        layer.weight.copy_(self.weight[k, :, :, None, None])
        layer.bias.copy_(self.bias[k])
        return layer


class PartStyledLinear(nn.Module):
    """K independent modulated 1x1 convs + bias + leaky ReLU (`StyledConv` without noise).

    Modulation and demodulation as StyleGAN2 (Eqs. 1-3), fused into per-sample, per-part
    weights (B, K, out, in) applied by one batched matmul.
    """

    def __init__(self, num_parts: int, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_parts, out_channels, in_channels))
        self.scale = 1.0 / math.sqrt(in_channels)
        self.mod_weight = nn.Parameter(torch.randn(num_parts, in_channels, w_dim))
        self.mod_bias = nn.Parameter(torch.ones(num_parts, in_channels))
        self.mod_scale = 1.0 / math.sqrt(w_dim)
        self.bias = nn.Parameter(torch.zeros(num_parts, out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x (B, K, in, H, W), w (B, K, w_dim) -> (B, K, out, H, W)."""
        b, k, c, h, wd = x.shape
        s = torch.einsum("kiw,bkw->bki", self.mod_weight * self.mod_scale, w) + self.mod_bias
        weight = self.scale * self.weight * s[:, :, None, :]  # (B, K, out, in)
        weight = weight * torch.rsqrt(weight.pow(2).sum(-1, keepdim=True) + 1e-8)  # demodulate
        out = torch.matmul(weight, x.reshape(b, k, c, h * wd))  # (B, K, out, HW)
        out = bias_leaky_relu(out + self.bias[None, :, :, None])
        return out.reshape(b, k, -1, h, wd)

    @torch.no_grad()
    def part(self, k: int) -> StyledConv:
        """Part k's layer as a `StyledConv` 1x1 (no noise) with the same weights."""
        out_channels, in_channels = self.weight.shape[1:]
        w_dim = self.mod_weight.shape[2]
        layer = StyledConv(in_channels, out_channels, 1, w_dim, inject_noise=False)
        layer = layer.to(self.weight)
        layer.conv.weight.copy_(self.weight[k, None, :, :, None, None])
        layer.conv.modulation.weight.copy_(self.mod_weight[k])
        layer.conv.modulation.bias.copy_(self.mod_bias[k])
        layer.bias.copy_(self.bias[k])
        return layer


class LocalGenerators(nn.Module):
    """The K part generators G_1..G_K evaluated together; the models use this one.

    `base_free_parts` lists parts whose base layers read their shape code instead of W^base,
    as SSGAN does for the background (part 0) so that it shares no structure with the face.
    """

    @classmethod
    def from_config(cls, config: Any) -> LocalGenerators:
        """SSGAN's local generators from a model config's fields (`local_channels`,
        `fourier_channels`, `fourier_max_frequency`, `feature_channels`, `base_layers`,
        `shape_layers`, `texture_layers`, `coarse_mlp_layers`); the background (part 0)
        shares no coarse structure, as in SSGAN."""
        return cls(config.num_parts, config.w_dim, hidden=config.local_channels,
                   fourier_channels=config.fourier_channels,
                   out_channels=config.feature_channels, base_layers=config.base_layers,
                   shape_layers=config.shape_layers, texture_layers=config.texture_layers,
                   coarse_mlp_layers=config.coarse_mlp_layers,
                   max_frequency=config.fourier_max_frequency, base_free_parts=(0,))

    def __init__(
        self,
        num_parts: int,
        w_dim: int,
        hidden: int = 64,
        fourier_channels: int = 64,
        out_channels: int = 256,
        base_layers: int = 2,
        shape_layers: int = 4,
        texture_layers: int = 4,
        coarse_mlp_layers: int = 1,
        max_frequency: float = 16.0,
        base_free_parts: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if coarse_mlp_layers < 1:
            raise ValueError(f"coarse_mlp_layers must be >= 1, got {coarse_mlp_layers}")
        self.num_parts = num_parts
        self.settings = dict(
            w_dim=w_dim,
            hidden=hidden,
            fourier_channels=fourier_channels,
            out_channels=out_channels,
            base_layers=base_layers,
            shape_layers=shape_layers,
            texture_layers=texture_layers,
            coarse_mlp_layers=coarse_mlp_layers,
            max_frequency=max_frequency,
        )
        self.codes = layer_codes(base_layers, shape_layers, texture_layers)
        self.shape_end = base_layers + shape_layers
        self.fourier = FourierFeatures(fourier_channels, max_frequency)
        self.coarse = nn.ModuleList(
            PartLinear(num_parts, fourier_channels if i == 0 else hidden, hidden)
            for i in range(coarse_mlp_layers)
        )
        self.convs = nn.ModuleList(
            PartStyledLinear(num_parts, hidden, hidden, w_dim) for _ in self.codes
        )
        self.to_feature = PartLinear(num_parts, hidden, out_channels)
        self.to_depth = PartLinear(num_parts, hidden, 1)
        self.to_density = PartLinear(num_parts, hidden, 1)
        base_free = torch.zeros(num_parts, dtype=torch.bool)
        base_free[list(base_free_parts)] = True
        self.register_buffer("base_free", base_free[None, :, None], persistent=False)

    def split_codes(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """W+ (B, 1 + 2K, w_dim) -> per-part base, shape, texture codes, each (B, K, w_dim).

        Slot layout of paper Eq. 1 (see `models.generator`): 0 base, 1 + 2k shape, 2 + 2k texture.
        """
        k = self.num_parts
        if w.shape[1] != 1 + 2 * k:
            raise ValueError(f"expected {1 + 2 * k} latent slots for {k} parts, got {w.shape[1]}")
        w_shape, w_texture = w[:, 1::2], w[:, 2::2]  # (B, K, w_dim) each
        w_base = torch.where(self.base_free, w_shape, w[:, :1].expand_as(w_shape))
        return {"base": w_base, "shape": w_shape, "texture": w_texture}

    def forward(
        self, w: torch.Tensor, resolution: int, channels_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W+ (B, 1 + 2K, w_dim) -> feature (B, K, C, H, W), depth and density (B, K, H, W) each.

        `channels_last` stores the features as (B, K, H, W, C) in memory, the layout the fast
        lifting path reads its feature table in (`models.lifting`), so it needs no copy."""
        styles = self.split_codes(w)
        x = self.fourier(w.shape[0], resolution, resolution)[:, None]  # (B, 1, F, H, W)
        x = coarse_mlp(self.coarse, x)  # (B, K, hidden, H, W)
        shape_x = x
        for i, (conv, code) in enumerate(zip(self.convs, self.codes, strict=True)):
            x = conv(x, styles[code])
            if i == self.shape_end - 1:
                shape_x = x
        depth = self.to_depth(shape_x)[:, :, 0]  # (B, K, H, W)
        density = F.softplus(self.to_density(shape_x)[:, :, 0])  # (B, K, H, W)
        return self.to_feature(x, channels_last), depth, density

    @torch.no_grad()
    def part(self, k: int) -> LocalGenerator:
        """Part k as a stand-alone `LocalGenerator` with the same weights (for tests, analysis)."""
        gen = LocalGenerator(**self.settings).to(self.to_feature.weight)
        gen.coarse = nn.ModuleList(layer.part(k) for layer in self.coarse)
        gen.convs = nn.ModuleList(layer.part(k) for layer in self.convs)
        gen.to_feature = self.to_feature.part(k)
        gen.to_depth = self.to_depth.part(k)
        gen.to_density = self.to_density.part(k)
        return gen
