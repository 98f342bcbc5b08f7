"""Shared StyleGAN2 building blocks used by every model of the zoo.

Equalised learning rate, the mapping network, modulated convolution, noise injection, skip
outputs (ToRGB), Fourier position features, FIR up/down-sampling and the discriminator's conv
and residual blocks. The designs follow StyleGAN2 (Karras et al. 2020) as implemented in
rosinality/stylegan2-pytorch and SemanticStyleGAN (SSGAN, Shi et al. 2022,
seasonSH/SemanticStyleGAN `models/utils.py`), written in plain PyTorch (no custom CUDA ops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LRELU_SLOPE = 0.2  # negative slope of every leaky ReLU (StyleGAN2)
LRELU_GAIN = math.sqrt(2.0)  # gain that keeps the activation variance of a leaky ReLU at 1
BLUR_KERNEL = (1, 3, 3, 1)  # StyleGAN2's separable FIR filter for up/down-sampling


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at `resolution`: channel_base / resolution, capped at channel_max.

    channel_base=32768, channel_max=512 reproduces SSGAN's table with channel_multiplier=2
    (512 up to 64x64, then 256, 128, 64 at 128, 256, 512).
    """
    return max(1, min(channel_max, channel_base // resolution))


def run_block(block: nn.Module, *inputs: Any, recompute: bool = False) -> Any:
    """`block(*inputs)`; with `recompute` (and autograd on) its activations are not kept but
    recomputed in backward (activation checkpointing: memory traded for one more forward).
    Gradients, double backward (R1) and the RNG of noise injection are unchanged."""
    if recompute and torch.is_grad_enabled():
        return checkpoint(block, *inputs, use_reentrant=False)
    return block(*inputs)


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2's fused bias + leaky ReLU, scaled by sqrt(2); bias (C,) added over dim 1.

    Fused like StyleGAN2's `fused_bias_act`: autograd keeps only the output (the slope at a
    point follows from the output's sign), one activation-sized tensor instead of three.
    Differentiable to any order (R1 differentiates through it twice).
    """
    return _BiasLeakyReLU.apply(x, bias)


def bias_leaky_relu_reference(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`bias_leaky_relu` from plain autograd ops (the oracle its tests compare against)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


class _BiasLeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is not None:
            x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
        y = F.leaky_relu(x, LRELU_SLOPE).mul_(LRELU_GAIN)
        ctx.save_for_backward(y)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        (y,) = ctx.saved_tensors
        # d y / d x = gain (y > 0) or gain * slope; a function of y's sign only, so the
        # graph of this backward has no path to y and double backward stays exact (a.e.).
        slope = torch.where(y > 0, LRELU_GAIN, LRELU_GAIN * LRELU_SLOPE).to(grad.dtype)
        grad_x = grad * slope
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_bias = grad_x.sum(dim=[d for d in range(grad_x.ndim) if d != 1])
        return grad_x, grad_bias


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each vector along dim 1 to unit root mean square (StyleGAN PixelNorm)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def make_blur_kernel(taps: Sequence[float] = BLUR_KERNEL) -> torch.Tensor:
    """2D FIR kernel (k, k) as the outer product of `taps`, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR filter, downsample (StyleGAN2's upfirdn2d).

    x (B, C, H, W); kernel (k, k); pad (before, after) on both axes, negative values crop.
    Returns (B, C, (H*up + p0 + p1 - k) // down + 1, same for W).
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    if pad[0] == pad[1] >= 0:  # symmetric zero padding: let the conv pad, no padded copy
        return F.conv2d(x, weight, stride=down, padding=pad[0], groups=c)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, weight, stride=down, groups=c)


class Blur(nn.Module):
    """FIR low-pass filter with explicit padding; `upsample_factor` rescales the gain."""

    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel() * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H + p0 + p1 - 3, W + p0 + p1 - 3)."""
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling by zero insertion + FIR filter (used on ToRGB skips, StyleGAN2)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_blur_kernel() * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, factor*H, factor*W)."""
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights scaled at runtime by 1/sqrt(fan_in)).

    `lr_mul` scales the effective learning rate (0.01 in the mapping network); `activation`
    applies the fused bias + leaky ReLU.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim)."""
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H', W')."""
        return F.conv2d(
            x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding
        )


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm, then `num_layers` equalised-lr linear layers with leaky ReLU.

    In training mode every call moves the `w_avg` buffer toward the batch mean of w by an EMA
    (StyleGAN2-ADA); truncation is `w_avg.lerp(w, psi)`.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_layers: int,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *[
                EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activation=True)
                for i in range(num_layers)
            ]
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, z_dim) -> (N, w_dim)."""
        w = self.layers(pixel_norm(z))
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with fused (de)modulation, run as one grouped conv.

    With `style_dim` set, an affine layer maps w to per-input-channel scales s (bias init 1).
    With `style_dim=None` the scales are a learned constant shared by all samples: SSGAN's
    `FixedStyledConv`, a weight-normalised conv used by its (unmodulated) render net.
    Demodulation divides each output filter by its L2 norm (StyleGAN2 Eq. 3).
    `upsample` doubles the resolution with a stride-2 transposed conv followed by the FIR blur,
    as StyleGAN2 and SSGAN do (not bilinear + conv), so both match the reference code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int | None,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
        )
        if style_dim is None:
            self.modulation: nn.Module | None = None
            self.fixed_style = nn.Parameter(torch.ones(1, in_channels))
        else:
            self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def modulated_weight(self, style: torch.Tensor | None) -> torch.Tensor:
        """Per-sample weights (B, out, in, k, k), or (1, out, in, k, k) without a style."""
        s = self.fixed_style if self.modulation is None else self.modulation(style)  # (G, in)
        weight = self.scale * self.weight * s[:, None, :, None, None]  # (G, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)  # (G, out)
            weight = weight * demod[:, :, None, None, None]
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in, H, W), style (B, style_dim) -> (B, out, H, W), or (2H, 2W) if upsampling."""
        b, _, h, w = x.shape
        weight = self.modulated_weight(style)
        groups = weight.shape[0]  # B with a style (one group per sample), else 1
        x = x.reshape(b // groups, groups * self.in_channels, h, w)
        k = self.kernel_size
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(groups * self.in_channels, -1, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=groups)
            out = self.blur(out.reshape(b, self.out_channels, *out.shape[-2:]))
        else:
            weight = weight.reshape(groups * self.out_channels, self.in_channels, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=groups)
        return out.reshape(b, self.out_channels, *out.shape[-2:])


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise scaled by a learned scalar (initialised to 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), noise (B or 1, 1, H, W) or None for fresh noise."""
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, *x.shape[2:]).normal_()
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv + optional noise injection + bias + leaky ReLU (gain sqrt(2))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int | None,
        upsample: bool = False,
        demodulate: bool = True,
        inject_noise: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, demodulate, upsample
        )
        self.noise = NoiseInjection() if inject_noise else None
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, in, H, W), style (B, style_dim) or None -> (B, out, H', W')."""
        out = self.conv(x, style)
        if self.noise is not None:
            out = self.noise(out, noise)
        return bias_leaky_relu(out, self.bias)


class ToRGB(nn.Module):
    """Skip output: modulated 1x1 conv without demodulation + bias, plus the upsampled skip.

    Used for images and for SSGAN's mask residual alike (`out_channels` = 3 or K).
    `style_dim=None` gives SSGAN's unmodulated ToRGB.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int | None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.upsample = Upsample()

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor | None = None,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, in, H, W), skip (B, out, H/2, W/2) or (B, out, H, W) -> (B, out, H, W)."""
        out = self.conv(x, style) + self.bias.view(1, -1, 1, 1)
        if skip is not None:
            if skip.shape[-1] != out.shape[-1]:
                skip = self.upsample(skip)
            out = out + skip
        return out


class FourierFeatures(nn.Module):
    """Fixed sin/cos position embedding of an H x W grid with coordinates in [-1, 1].

    As SSGAN's `PositionEmbedding` (before its learned projection): for each axis and each of
    `channels // 4` log-spaced frequencies f in [1, max_frequency] (cycles over [-1, 1]),
    sin(pi f u) and cos(pi f u). A continuous function of the coordinates, so any grid size
    samples the same field. Nothing is learned; the following layer projects it. On an
    n-point grid, frequencies above (n - 1) / 2 alias (the cpu presets' 16x16 part maps at the
    default 16; 2 or 4 there changed 3D-SSGAN's FID by no more than its run-to-run spread).
    """

    def __init__(self, channels: int, max_frequency: float = 16.0) -> None:
        super().__init__()
        if channels % 4 != 0:
            raise ValueError(f"FourierFeatures channels must be a multiple of 4, got {channels}")
        self.channels = channels
        freqs = torch.logspace(0.0, math.log2(max_frequency), channels // 4, base=2.0)
        self.register_buffer("freqs", math.pi * freqs)

    def forward(self, batch: int, height: int, width: int) -> torch.Tensor:
        """(B, channels, H, W), laid out as [x: sin, cos per freq][y: sin, cos per freq]."""
        dev, n = self.freqs.device, self.freqs.numel()
        per_axis = []
        for size in (width, height):
            u = torch.linspace(-1.0, 1.0, size, device=dev)[:, None] * self.freqs  # (size, n)
            per_axis.append(torch.stack([u.sin(), u.cos()], dim=1).reshape(size, 2 * n))
        x_feat = per_axis[0].t()[:, None, :].expand(2 * n, height, width)  # varies along W
        y_feat = per_axis[1].t()[:, :, None].expand(2 * n, height, width)  # varies along H
        return torch.cat([x_feat, y_feat], dim=0)[None].expand(batch, -1, -1, -1)


class ConstantInput(nn.Module):
    """Learned constant (1, C, S, S) repeated over the batch (StyleGAN2's synthesis input)."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        """(B, C, S, S)."""
        return self.input.expand(batch, -1, -1, -1)


class MinibatchStd(nn.Module):
    """Appends the std of features across groups of samples as extra channels (StyleGAN2).

    The group size is the largest divisor of the batch not above `group_size`.
    """

    def __init__(self, group_size: int = 4, num_features: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C + num_features, H, W)."""
        b, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, b) + 1) if b % d == 0)
        f = self.num_features
        y = x.reshape(g, -1, f, c // f, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (B/g, f, C/f, H, W)
        y = y.mean(dim=(2, 3, 4))[:, :, None, None]  # (B/g, f, 1, 1)
        y = y.repeat(g, 1, h, w)  # (B, f, H, W)
        return torch.cat([x, y], dim=1)


class BiasLeakyReLU(nn.Module):
    """Learned bias + leaky ReLU with gain sqrt(2) (StyleGAN2's FusedLeakyReLU)."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> same shape."""
        return bias_leaky_relu(x, self.bias)


class ConvLayer(nn.Sequential):
    """Discriminator conv: [blur + stride-2] equalised conv [+ bias + leaky ReLU]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
        layers.append(
            EqualConv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=2 if downsample else 1,
                padding=0 if downsample else kernel_size // 2,
                bias=bias and not activate,
            )
        )
        if activate:
            layers.append(BiasLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block halving the resolution: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, bias=False, activate=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum scaled by 1/sqrt(2) to keep unit variance."""
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)
