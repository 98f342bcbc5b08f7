"""Tri-planes (EG3D, Chan et al. 2022) and IDE-3D's multi-head StyleGAN2 tri-plane generator.

A tri-plane is three axis-aligned feature planes (B, 3, C, H, W) spanning the box
[-extent, extent]^3 (head units, models.camera); a point's feature is the mean of the bilinear
samples of its projections onto the xy, xz and zy planes (EG3D `sample_from_planes`). A point
outside the box takes the features of the nearest plane edge (EG3D reads zeros there, which
makes every ray that leaves the box end in one constant colour and class: a frame around the
image).

`TriplaneGenerator` is IDE-3D's generator G_feat (IDE-3D Sec. 3.1, Fig. 2, supplement B): a
StyleGAN2 synthesis network whose shallow layers read the shape code w_s and whose deep layers
read the texture code w_t, the deep layers split into three parallel heads, one per texture
plane, all fed by the shallow layers' last feature map:

    constant 4x4 -> StyleGAN2 blocks (w_s) up to `semantic_resolution`; their skip outputs
      (3 * C_s channels) are the semantic tri-plane f^s_triplane
    -> 3 heads, each StyleGAN2 blocks (w_t) from 2 * `semantic_resolution` up to
      `plane_resolution` with skip outputs of C_t channels: one texture plane each (f^t)

The blocks are the zoo's StyleGAN2 block (`models.render_net.RenderBlock`, modulated).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import ConstantInput, channels_at
from models.render_net import RenderBlock, is_power_of_two

PLANE_AXES = ((0, 1), (0, 2), (2, 1))  # world axes read as (u, v) by the xy, xz and zy planes


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, extent: float = 1.0
                    ) -> torch.Tensor:
    """(B, M, C) features at points (B, M, 3) of tri-planes (B, 3, C, H, W) spanning
    [-extent, extent]^3, mean over the three planes."""
    batch, _, channels, height, width = planes.shape
    coords = torch.stack([points[..., list(axes)] for axes in PLANE_AXES], dim=1) / extent
    sampled = F.grid_sample(planes.reshape(batch * 3, channels, height, width),
                            coords.reshape(batch * 3, -1, 1, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)  # (B*3, C, M, 1)
    return sampled.reshape(batch, 3, channels, -1).mean(1).transpose(1, 2)


def _resolutions(start: int, stop: int) -> list[int]:
    """start, 2 start, ..., stop."""
    return [start * 2**i for i in range(int(math.log2(stop // start)) + 1)]


class TriplaneGenerator(nn.Module):
    """Shape code -> semantic tri-plane and shared features; texture code -> texture tri-plane."""

    def __init__(
        self,
        w_dim: int,
        semantic_resolution: int = 64,
        plane_resolution: int = 256,
        semantic_channels: int = 32,
        plane_channels: int = 32,
        channel_base: int = 32768,
        channel_max: int = 512,
    ) -> None:
        super().__init__()
        if not (is_power_of_two(semantic_resolution) and is_power_of_two(plane_resolution)
                and 4 <= semantic_resolution < plane_resolution):
            raise ValueError("tri-plane resolutions must be powers of two with 4 <= "
                             f"semantic_resolution < plane_resolution, got {semantic_resolution}, "
                             f"{plane_resolution}")
        self.semantic_channels, self.plane_channels = semantic_channels, plane_channels

        def width(res: int) -> int:
            return channels_at(res, channel_base, channel_max)

        def block(res: int, out_channels: int) -> RenderBlock:
            in_channels = width(res if res == 4 else res // 2)
            return RenderBlock(in_channels, width(res), res, out_channels, 0, upsample=res > 4,
                               style_dim=w_dim)

        self.input = ConstantInput(width(4))
        self.shallow = nn.ModuleList(block(res, 3 * semantic_channels)
                                     for res in _resolutions(4, semantic_resolution))
        self.heads = nn.ModuleList(
            nn.ModuleList(block(res, plane_channels)
                          for res in _resolutions(2 * semantic_resolution, plane_resolution))
            for _ in PLANE_AXES)

    def semantic(self, w_s: torch.Tensor, randomize_noise: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """w_s (B, w_dim) -> semantic tri-plane (B, 3, C_s, S, S), shared features (B, c, S, S)."""
        x, skip = self.input(w_s.shape[0]), None
        for layer in self.shallow:
            x, skip, _ = layer(x, skip, None, randomize_noise, style=w_s)
        return skip.unflatten(1, (3, self.semantic_channels)), x

    def texture(self, shared: torch.Tensor, w_t: torch.Tensor, randomize_noise: bool = True
                ) -> torch.Tensor:
        """Shared features (B, c, S, S), w_t (B, w_dim) -> texture tri-plane (B, 3, C_t, P, P)."""
        planes = []
        for head in self.heads:
            x, skip = shared, None
            for layer in head:
                x, skip, _ = layer(x, skip, None, randomize_noise, style=w_t)
            planes.append(skip)
        return torch.stack(planes, dim=1)
