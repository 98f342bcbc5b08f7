"""The render net R: rendered feature map -> high-resolution image and mask residual.

3D-SSGAN Sec. 3.3 ("Final image and mask synthesis") follows SSGAN's `RenderNet`
(seasonSH/SemanticStyleGAN, `models/semantic_stylegan.py`), which this module reproduces:

- It is NOT style-modulated: every conv is SSGAN's `FixedStyledConv`, a weight-demodulated conv
  whose per-input-channel scales are learned constants (`style_dim=None` in the shared blocks),
  with noise injection; the skip outputs are unmodulated `ToRGB` layers.
- A StyleGAN2 skip architecture: each resolution has two 3x3 convs (the first upsamples 2x),
  a skip output to RGB and one to K mask channels; skips are summed up the resolutions.
- Optionally (`min_resolution` < r, SSGAN's `min_feat_size`) the feature map is first average
  pooled to `min_resolution`, grown back with conv blocks, and concatenated with the original
  feature map at resolution r before growing further.
- It returns no low-resolution image (SSGAN has none).

One change: the first block (at the starting resolution) does not upsample, where SSGAN starts
upsampling at once. It gives a skip output at every resolution including the input one and lets
R == r work (then the net is a conv head on the rendered features).

The mask output is the residual Delta m; the caller forms m_hr = upsample(m) + Delta m (paper
Sec. 3.3). SSGAN adds its coarse mask into the mask skip at resolution r instead, which is the
same as upsampling it with the skip path's FIR `Upsample`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import StyledConv, ToRGB, channels_at, run_block


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n > 0 and n & (n - 1) == 0


class RenderBlock(nn.Module):
    """Two 3x3 convs (the first optionally upsampling) + image and mask skips.

    Unmodulated (SSGAN's render net) by default; with `style_dim` every conv and skip is
    modulated by a style, which makes it a StyleGAN2 synthesis block (the tri-plane generator
    of `models.triplane` uses it so). `mask_channels=0` drops the mask skip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        resolution: int,
        image_channels: int,
        mask_channels: int,
        upsample: bool,
        style_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.conv0 = StyledConv(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.conv1 = StyledConv(out_channels, out_channels, 3, style_dim)
        self.to_image = ToRGB(out_channels, image_channels, style_dim)
        self.to_mask = ToRGB(out_channels, mask_channels, style_dim) if mask_channels else None
        # Fixed noise for deterministic renders (SSGAN's `noises` buffers).
        self.register_buffer("noise0", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("noise1", torch.randn(1, 1, resolution, resolution))

    def forward(
        self,
        x: torch.Tensor,
        image: torch.Tensor | None,
        mask: torch.Tensor | None,
        randomize_noise: bool,
        style: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, in, s or s/2, ...), skips at s/2 or None, style (B, style_dim) if modulated
        -> x (B, out, s, s), skips at s (the mask skip is None without a mask branch)."""
        x = self.conv0(x, style, noise=None if randomize_noise else self.noise0)
        x = self.conv1(x, style, noise=None if randomize_noise else self.noise1)
        mask = None if self.to_mask is None else self.to_mask(x, style, skip=mask)
        return x, self.to_image(x, style, skip=image), mask


class RenderNet(nn.Module):
    """SSGAN's render net: feature (B, C, r, r) -> image (B, 3, R, R), mask residual (B, K, R, R).

    Widths per resolution s are `channels_at(s, channel_base, channel_max)`; the defaults give
    SSGAN's table (channel_multiplier 2): 512 up to 64x64, then 256, 128, 64.
    """

    def __init__(
        self,
        in_channels: int,
        num_parts: int,
        in_resolution: int,
        out_resolution: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        min_resolution: int | None = None,
        image_channels: int = 3,
        checkpoint_resolution: int | None = None,  # recompute blocks at >= this res; None: off
    ) -> None:
        super().__init__()
        start = in_resolution if min_resolution is None else min_resolution
        for name, value in (("in", in_resolution), ("out", out_resolution), ("min", start)):
            if not is_power_of_two(value):
                raise ValueError(f"render net {name}_resolution must be a power of two: {value}")
        if not start <= in_resolution <= out_resolution:
            raise ValueError(
                f"render net needs min_resolution <= in_resolution <= out_resolution, got "
                f"{start}, {in_resolution}, {out_resolution}"
            )
        if start < in_resolution == out_resolution:
            raise ValueError("min_resolution < in_resolution needs out_resolution > in_resolution")
        self.in_resolution = in_resolution
        self.start_resolution = start
        self.blocks = nn.ModuleList()
        self.concat_at = []  # per block: whether its input is concatenated with the features
        self.recompute_at = []  # per block: whether backward recomputes its activations
        channels = in_channels
        for i in range(int(math.log2(out_resolution // start)) + 1):
            res = start * 2**i
            concat = start < in_resolution and res == 2 * in_resolution
            out_channels = channels_at(res, channel_base, channel_max)
            self.blocks.append(
                RenderBlock(
                    channels + (in_channels if concat else 0),
                    out_channels,
                    res,
                    image_channels,
                    num_parts,
                    upsample=i > 0,
                )
            )
            self.concat_at.append(concat)
            self.recompute_at.append(checkpoint_resolution is not None
                                     and res >= checkpoint_resolution)
            channels = out_channels

    def forward(
        self, feature: torch.Tensor, randomize_noise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feature (B, C, r, r) -> image (B, 3, R, R), mask_residual (B, K, R, R).

        `randomize_noise=False` uses the fixed noise buffers (deterministic, view-consistent).
        """
        x = feature
        if self.start_resolution < self.in_resolution:
            x = F.adaptive_avg_pool2d(feature, self.start_resolution)  # (B, C, min, min)
        image = mask = None
        for block, concat, recompute in zip(self.blocks, self.concat_at, self.recompute_at,
                                            strict=True):
            if concat:
                x = torch.cat([x, feature], dim=1)  # SSGAN: re-inject the features at r
            x, image, mask = run_block(block, x, image, mask, randomize_noise,
                                       recompute=recompute)
        return image, mask


def build_render_net(config: Any, **overrides: Any) -> RenderNet:
    """The render net of a model config: its feature channels and parts, render and output
    resolutions, widths and activation checkpointing; `overrides` change any argument."""
    arguments = dict(in_channels=config.feature_channels, num_parts=config.num_parts,
                     in_resolution=config.render_resolution, out_resolution=config.resolution,
                     channel_base=config.render_channel_base,
                     channel_max=config.render_channel_max,
                     checkpoint_resolution=config.checkpoint_resolution)
    return RenderNet(**{**arguments, **overrides})

