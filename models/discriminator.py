"""SSGAN's dual-branch discriminator on (image, mask) pairs (3D-SSGAN Sec. 3.4).

Follows `DualBranchDiscriminator` in seasonSH/SemanticStyleGAN (`models/semantic_stylegan.py`):
the image (3 ch) and the mask (K ch) each get their own tower, a 1x1 `ConvLayer` stem and
residual blocks halving the resolution; the towers are merged by summation, then minibatch
std, a 3x3 conv and two linear layers give one logit. SSGAN runs both towers all the way down
to 4x4 and sums there (`merge_resolution=4`, the default); a larger `merge_resolution` sums
earlier and shares the remaining residual blocks.

What a discriminator reads is named by generator-output keys: `image` and `mask`, plus, for a
dual discriminator (EG3D, IDE-3D), the generator's low-resolution raw render `raw_image` /
`raw_mask`. The training loop calls D(**discriminator_inputs(fake)) on generated pairs and
D(**spec.real_inputs(config, image, mask)) on real ones (models.registry), so each model
declares what it needs and the loop stays the same for all.

R1 needs nothing special from the network: the caller marks every real input as requiring
grad and calls `losses.r1_backward(logits, inputs, ...)`, one penalty per branch (image inputs,
mask inputs) so that each gets its own gamma.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from models.blocks import ConvLayer, EqualLinear, MinibatchStd, ResBlock, channels_at, run_block
from models.render_net import is_power_of_two

# Generator-output keys a discriminator may read, by R1 branch (image gamma, mask gamma).
IMAGE_INPUTS = ("image", "raw_image")  # (B, 3, R, R); the raw render (B, 3, r, r)
MASK_INPUTS = ("mask", "raw_mask")  # (B, K, R, R); the raw render (B, K, r, r)


def discriminator_inputs(output: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword arguments of D on a generated batch: the keys of `IMAGE_INPUTS` and
    `MASK_INPUTS` that the generator output carries."""
    return {key: output[key] for key in IMAGE_INPUTS + MASK_INPUTS if key in output}


def image_and_mask(config: Any, image: torch.Tensor, mask: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """A real batch as a single-resolution D reads it (the zoo's default `real_inputs`)."""
    return {"image": image, "mask": mask}


def res_blocks(resolution: int, stop: int, channel_base: int, channel_max: int) -> list[ResBlock]:
    """Residual blocks halving the resolution from `resolution` down to `stop`."""
    blocks = []
    while resolution > stop:
        in_ch = channels_at(resolution, channel_base, channel_max)
        blocks.append(ResBlock(in_ch, channels_at(resolution // 2, channel_base, channel_max)))
        resolution //= 2
    return blocks


def tower(
    in_channels: int, resolution: int, stop: int, channel_base: int, channel_max: int
) -> nn.Sequential:
    """A 1x1 stem at `resolution`, then residual blocks down to resolution `stop`."""
    stem = ConvLayer(in_channels, channels_at(resolution, channel_base, channel_max), 1)
    return nn.Sequential(stem, *res_blocks(resolution, stop, channel_base, channel_max))


class DualBranchDiscriminator(nn.Module):
    """D(image (B, 3, R, R), mask (B, K, R, R)) -> logits (B, 1).

    Widths per resolution are `channels_at(res, channel_base, channel_max)`; the defaults are
    SSGAN's (channel_multiplier 2). Any power-of-two resolution >= 8.
    """

    def __init__(
        self,
        resolution: int,
        num_parts: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        merge_resolution: int = 4,
        image_channels: int = 3,
        mbstd_group_size: int = 4,
        checkpoint_resolution: int | None = None,  # recompute blocks at >= this res; None: off
    ) -> None:
        super().__init__()
        if not (is_power_of_two(resolution) and resolution >= 8):
            raise ValueError(f"discriminator resolution must be a power of two >= 8: {resolution}")
        if not (is_power_of_two(merge_resolution) and 4 <= merge_resolution <= resolution):
            raise ValueError(
                f"merge_resolution must be a power of two in [4, {resolution}]: {merge_resolution}"
            )
        widths = (channel_base, channel_max)
        self.resolution = resolution
        self.checkpoint_resolution = checkpoint_resolution
        self.image_tower = tower(image_channels, resolution, merge_resolution, *widths)
        self.mask_tower = tower(num_parts, resolution, merge_resolution, *widths)
        self.shared = nn.Sequential(*res_blocks(merge_resolution, 4, *widths))
        c4 = channels_at(4, *widths)
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.final_conv = ConvLayer(c4 + 1, c4, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(c4 * 4 * 4, c4, activation=True),
            EqualLinear(c4, 1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, R, R), mask (B, K, R, R) -> logits (B, 1)."""
        x = self._tower(self.image_tower, image) + self._tower(self.mask_tower, mask)
        x = self.shared(x)  # (B, c4, 4, 4)
        x = self.final_conv(self.mbstd(x))  # (B, c4, 4, 4)
        return self.final_linear(x.flatten(1))

    def _tower(self, tower: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """A tower's stem and blocks (B, in, R, R) -> (B, c, merge, merge); blocks working at
        `checkpoint_resolution` or above recompute their activations in backward."""
        limit = self.checkpoint_resolution
        resolution = self.resolution
        for layer in tower:
            x = run_block(layer, x, recompute=limit is not None and resolution >= limit)
            resolution = x.shape[-1]
        return x


def build_dual_branch_discriminator(config: Any, **overrides: Any) -> DualBranchDiscriminator:
    """SSGAN's dual-branch discriminator on (image, mask) at a model config's output
    resolution, widths and activation checkpointing; `overrides` change any argument."""
    arguments = dict(resolution=config.resolution, num_parts=config.num_parts,
                     channel_base=config.disc_channel_base, channel_max=config.disc_channel_max,
                     checkpoint_resolution=config.checkpoint_resolution)
    return DualBranchDiscriminator(**{**arguments, **overrides})

