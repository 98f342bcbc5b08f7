"""3D-SSGAN's lifted rendering (Eqs. 2-11) as fused Triton kernels: `render_lifted_triton`.

The third implementation behind `models.lifting.render_lifted` (path "triton"), equal to
`render_lifted_fast` in values and in gradients with respect to every input (f2d, sigma2d,
d_hat, points, t, weights). Notation as in `models.lifting`: a ray sample X_i has 4
xy-corners c in each part's H x W maps, with bilinear weights w_xy,c, and lies between the
depth nodes z0 and z0 + 1; psi_k at corner c, linearly interpolated between those nodes, is

    A_k,c = (1 - fz) psi(d_hat_k[c] - z0) + fz psi(d_hat_k[c] - z0 - 1)            (Eq. 7)

so the trilinear sample of psi_k g_k is sum_c w_xy,c A_k,c g_k[c] for any 2D map g_k. Two
kernels evaluate psi at the corners from d_hat directly (no node table, no volume):

    `_densities_forward`: sigma_k^3d(X_i) = sum_c w_xy,c A_k,c sigma_k^2d[c], (B, rays, N, K)
        (Eqs. 6, 11); programs over blocks of samples x parts.
    `_features_forward`: f_render = sum_i s_i sum_c,k w_xy,c A_k,c g_k[c] f_k^2d[c], (B, rays, C)
        (Eqs. 4-5, 8), with s_i = w_i and g = 1 for fusion "sum", s_i = w_i / sigma_fused(X_i)
        and g = sigma^2d for "density"; one program per (ray, channel block), which walks each
        corner along the ray's samples and sums the coefficients of consecutive samples that
        share the corner's pixel (a frontal ray's N samples all share their 4 pixels) before
        it reads that pixel's (K, C) features once: reads of f2d drop from 4N to 4 per ray and
        part at best, and no per-(sample, corner, part) tensor exists.

Backward: `_features_backward` and `_densities_backward` recompute those terms and scatter the
gradients of f2d, sigma2d and d_hat with atomic adds (the same run merging turns a run of
samples into one atomic add per pixel); the gradients of the points and of the samples'
scales are per-sample partial sums, reduced in PyTorch (deterministic). Atomic adds make the
map gradients' summation order, hence their last bits, vary between runs.

Still PyTorch inside the autograd Function: the per-sample scalars between the two kernels,
O(B * rays * N * K): NeRF weights (Eqs. 2-3), the "density" fusion's normaliser, the mask of
Eq. 10 and the expected depth, forward and (by autograd on a recomputation) backward. Second
order: when autograd records the backward pass (create_graph=True, e.g. path-length
regularisation), the backward differentiates `render_lifted_fast` instead (same numbers,
PyTorch's cost and memory), so the path is differentiable to any order as the others are.

Devices: CUDA, or CPU under Triton's interpreter (TRITON_INTERPRET=1, for tests; slow).
Triton reads that variable when it is imported (its own library functions, such as tl.sum,
are wrapped then) and the mode holds for the process: set it before anything imports triton,
e.g. in the environment of a fresh process as tests/test_lifting_triton.py does. This module
imports triton only on the first render, so importing it (or models.lifting) decides nothing;
a variable changed after the import is reported. Computes in float32 (float64 for float64
inputs); indices are int32 (maps and sample counts below 2**31).
"""

from __future__ import annotations

import functools
import os
import types
from dataclasses import dataclass
from typing import Any

import torch

from models.lifting import (
    FUSION_EPS,
    PSI_FUNCTIONS,
    LiftedRender,
    LiftingConfig,
    _check,
    _mask_weights,
    render_lifted_fast,
)
from models.rendering import accumulate, expected_depth, nerf_weights

# psi's code in the kernels (`_psi`): PSI_FUNCTIONS in this order
PSI_CODES = {"gaussian": 0, "inverse_abs": 1, "inverse_square": 2}
assert set(PSI_CODES) == set(PSI_FUNCTIONS), "a new psi function needs its kernel code"
# Block sizes (Triton's default 4 warps): compiled for sm_90 with K <= 16 parts, no kernel
# variant spills registers (at most 195 per thread); larger blocks do. Not yet tuned on a GPU.
SAMPLE_BLOCK = 32  # samples per program of the density kernels
CHANNEL_BLOCK = 64  # at most this many channels per program of the feature kernels

# triton.language: bound in the kernels' own namespace by `_kernels` (triton is imported
# lazily), so the functions below are Triton source, not Python run by this module.
tl: Any = None


def render_lifted_triton(
    f2d: torch.Tensor,
    sigma2d: torch.Tensor,
    d_hat: torch.Tensor,
    volume_depth: int,
    points: torch.Tensor,
    t: torch.Tensor,
    *,
    lifting: LiftingConfig,
    mask_weights: str = "nerf",
    weights: torch.Tensor | None = None,
    fusion: str = "sum",
) -> LiftedRender:
    """Lift, fuse and render with fused Triton kernels; equal to `render_lifted_fast`.

    Arguments as in `render_lifted` (no `ray_chunk`: nothing per (sample, corner, part) is
    kept). Memory, forward + backward, with s = 4 bytes per element (8 in float64): the
    outputs, about s * B*rays*N * (2K + 16 * ceil(C / CHANNEL_BLOCK) + 10) for the sampled
    part densities, the scales and the per-sample partial gradients, and s * B*K*H*W*C for
    the gradient of f2d (and another for a channels-last copy of f2d unless it is stored so).
    """
    _check(f2d, sigma2d, d_hat, volume_depth, points, t, mask_weights, fusion)
    if f2d.device.type != "cuda" and not _interpreting():
        raise ValueError("lifting path 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 on "
                         "CPU, for tests); use lifting path 'fast' on CPU")
    options = _Options(volume_depth, PSI_CODES[lifting.function], lifting.alpha, mask_weights,
                       fusion)
    return LiftedRender(*_LiftedRender.apply(f2d, sigma2d, d_hat, points, t, weights, options))


def _interpreting() -> bool:
    """Whether TRITON_INTERPRET=1 asks for Triton's interpreter (read as Triton reads it)."""
    try:
        import triton
    except ImportError as error:
        raise ValueError("lifting path 'triton' needs the triton package (CUDA builds of "
                         "torch ship it); use lifting path 'fast'") from error
    return bool(triton.knobs.runtime.interpret)


@dataclass(frozen=True)
class _Options:
    """The non-tensor arguments of `_LiftedRender`."""

    volume_depth: int
    psi: int  # PSI_CODES
    alpha: float
    mask_weights: str
    fusion: str


class _LiftedRender(torch.autograd.Function):
    """(feature, mask_logits, weights, depth) of `LiftedRender` from the part maps and samples."""

    @staticmethod
    def forward(ctx: Any, f2d: torch.Tensor, sigma2d: torch.Tensor, d_hat: torch.Tensor,
                points: torch.Tensor, t: torch.Tensor, weights: torch.Tensor | None,
                options: _Options) -> tuple[torch.Tensor, ...]:
        dtype = _result_type(f2d, sigma2d, d_hat, points, t, weights)
        maps = _Maps.of(f2d, sigma2d, d_hat, points, options)
        sigma_parts = _launch_densities(maps)  # (B, rays, N, K) Eqs. 6, 11
        scale, mask_logits, weights_out, depth = _per_sample(
            sigma_parts, t.to(maps.compute), _to(weights, maps.compute), options)
        feature = _launch_features(maps, scale)  # (B, rays, C) Eqs. 4-5, 8
        ctx.save_for_backward(f2d, sigma2d, d_hat, points, t, weights, sigma_parts, scale)
        ctx.options = options
        if weights is not None:
            weights_out = weights  # the caller's tensor, as the other paths return it
        return feature.to(dtype), mask_logits.to(dtype), weights_out.to(dtype), depth.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad_feature: torch.Tensor, grad_mask: torch.Tensor,
                 grad_weights: torch.Tensor, grad_depth: torch.Tensor
                 ) -> tuple[torch.Tensor | None, ...]:
        f2d, sigma2d, d_hat, points, t, weights, sigma_parts, scale = ctx.saved_tensors
        options, needs = ctx.options, ctx.needs_input_grad[:6]
        inputs = (f2d, sigma2d, d_hat, points, t, weights)
        grads_out = (grad_feature, grad_mask, grad_weights, grad_depth)
        if torch.is_grad_enabled():  # create_graph: a differentiable backward pass
            return (*_fast_path_gradients(inputs, needs, grads_out, options), None)
        maps = _Maps.of(f2d, sigma2d, d_hat, points, options)
        compute = maps.compute
        grad_feature, grad_mask, grad_weights, grad_depth = (g.to(compute) for g in grads_out)
        grad_table = torch.zeros_like(maps.table, dtype=compute) if needs[0] else None
        grad_sigma = torch.zeros(sigma2d.shape, dtype=compute, device=sigma2d.device)
        grad_d_hat = torch.zeros_like(grad_sigma)  # (B, K, H, W) each
        grad_scale, grad_voxel = _launch_features_backward(
            maps, scale, grad_feature, grad_table, grad_sigma, grad_d_hat)

        # The per-sample scalars: autograd through their recomputation from sigma_parts.
        with torch.enable_grad():
            leaves = [None if x is None else x.detach().to(compute).requires_grad_()
                      for x in (sigma_parts, t, weights)]
            outs = _per_sample(*leaves, options)
            pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for out, grad in zip(outs, (grad_scale, grad_mask, grad_weights, grad_depth),
                                 strict=True):
                if out.requires_grad:  # scale is weights for fusion "sum": add their grads
                    old = pairs.get(id(out))
                    pairs[id(out)] = (out, grad if old is None else old[1] + grad)
            wanted = [x for x in leaves if x is not None]
            grad_leaves = torch.autograd.grad([out for out, _ in pairs.values()], wanted,
                                              [grad for _, grad in pairs.values()],
                                              allow_unused=True)
        grad_parts, grad_t, *grad_w = grad_leaves
        grad_voxel += _launch_densities_backward(maps, grad_parts, grad_sigma, grad_d_hat)

        height, width = sigma2d.shape[-2:]
        # d(voxel coordinates)/d(world point): `_voxel`, y flipped (models.camera.world_to_grid)
        for axis, span in enumerate((width - 1, 1 - height, options.volume_depth - 1)):
            grad_voxel[..., axis] *= span / 2
        grads = (
            None if grad_table is None else grad_table.permute(0, 1, 4, 2, 3),  # (B, K, C, H, W)
            grad_sigma,
            grad_d_hat,
            grad_voxel,  # (B, rays, N, 3) the points' gradient
            grad_t,
            grad_w[0] if grad_w else None,
        )
        return (*(grad.to(x.dtype) if need and grad is not None else None
                  for grad, x, need in zip(grads, inputs, needs, strict=True)), None)


def _fast_path_gradients(
    inputs: tuple[torch.Tensor | None, ...],
    needs: tuple[bool, ...],
    grads_out: tuple[torch.Tensor, ...],
    options: _Options,
) -> list[torch.Tensor | None]:
    """The input gradients as a differentiable function of the inputs and output gradients:
    autograd of `render_lifted_fast` (the backward pass of the backward pass is PyTorch's)."""
    f2d, sigma2d, d_hat, points, t, weights = inputs
    lifting = LiftingConfig(function=list(PSI_CODES)[options.psi], alpha=options.alpha)
    render = render_lifted_fast(f2d, sigma2d, d_hat, options.volume_depth, points, t,
                                lifting=lifting, mask_weights=options.mask_weights,
                                weights=weights, fusion=options.fusion)
    outs = [(out, grad) for out, grad in zip(
        (render.feature, render.mask_logits, render.weights, render.depth), grads_out,
        strict=True) if out.requires_grad]
    wanted = [x for x, need in zip(inputs, needs, strict=True) if need]
    grads = iter(torch.autograd.grad([out for out, _ in outs], wanted,
                                     [grad for _, grad in outs], create_graph=True,
                                     allow_unused=True) if wanted else ())
    return [next(grads) if need else None for need in needs]


def _per_sample(
    sigma_parts: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor | None,
    options: _Options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-sample scalars (PyTorch): scale s_i of the feature kernel, mask logits, NeRF
    weights and depth, from the sampled part densities (B, rays, N, K) as `_render_rays`."""
    if weights is None:  # (B, rays, N) Eqs. 2-3 on sigma_fused, Eq. 8
        weights = nerf_weights(sigma_parts.sum(-1), t)
    scale = weights  # (B, rays, N)
    if options.fusion == "density":  # f_fused = sum_k sigma_k^3d f_k^2d / sigma_fused
        scale = weights / (sigma_parts.sum(-1) + FUSION_EPS)
    mask_logits = accumulate(_mask_weights(weights, options.mask_weights), sigma_parts)  # Eq. 10
    return scale, mask_logits, weights, expected_depth(weights, t)


@dataclass(frozen=True)
class _Maps:
    """The kernels' view of the inputs: the part maps, the points and the kernels."""

    table: torch.Tensor  # (B, K, H, W, C) f2d channels last (a view when stored so)
    sigma2d: torch.Tensor  # (B, K, H, W)
    d_hat: torch.Tensor  # (B, K, H, W)
    points: torch.Tensor  # (B, rays, N, 3) contiguous, compute dtype
    alpha: torch.Tensor  # (1,) psi's sharpness, compute dtype (also sets the kernels' dtype)
    options: _Options
    kernels: types.SimpleNamespace

    @classmethod
    def of(cls, f2d: torch.Tensor, sigma2d: torch.Tensor, d_hat: torch.Tensor,
           points: torch.Tensor, options: _Options) -> _Maps:
        compute = torch.float64 if f2d.dtype == torch.float64 else torch.float32
        return cls(f2d.permute(0, 1, 3, 4, 2).contiguous(), sigma2d, d_hat,
                   points.to(compute).contiguous(),
                   torch.full((1,), options.alpha, dtype=compute, device=f2d.device), options,
                   _kernels())

    @property
    def compute(self) -> torch.dtype:
        return self.alpha.dtype

    def shape_arguments(self) -> tuple[int, ...]:
        """rays, N, K, H, W, D and the strides of sigma2d and d_hat (kernel argument order)."""
        rays, samples = self.points.shape[1:3]
        parts, height, width = self.d_hat.shape[1:]
        return (rays, samples, parts, height, width, self.options.volume_depth,
                *self.sigma2d.stride(), *self.d_hat.stride())


def _launch_densities(maps: _Maps) -> torch.Tensor:
    """(B, rays, N, K) the part densities at the samples (Eqs. 6, 11)."""
    batch, rays, samples = maps.points.shape[:3]
    parts = maps.d_hat.shape[1]
    out = torch.empty(batch, rays, samples, parts, dtype=maps.compute, device=maps.points.device)
    grid = (_blocks(out.numel() // parts, SAMPLE_BLOCK),)
    maps.kernels.densities_forward[grid](
        maps.sigma2d, maps.d_hat, maps.points, maps.alpha, out, batch * rays * samples,
        *maps.shape_arguments(), PSI=maps.options.psi, BLOCK_S=SAMPLE_BLOCK,
        BLOCK_K=_pow2(parts))
    return out


def _launch_densities_backward(maps: _Maps, grad_parts: torch.Tensor, grad_sigma: torch.Tensor,
                               grad_d_hat: torch.Tensor) -> torch.Tensor:
    """Adds the density kernel's map gradients to grad_sigma and grad_d_hat (B, K, H, W);
    returns its gradient with respect to the samples' voxel coordinates (B, rays, N, 3)."""
    batch, rays, samples = maps.points.shape[:3]
    parts = maps.d_hat.shape[1]
    grad_voxel = torch.empty_like(maps.points)  # (B, rays, N, 3)
    grid = (_blocks(batch * rays * samples, SAMPLE_BLOCK),)
    maps.kernels.densities_backward[grid](
        maps.sigma2d, maps.d_hat, maps.points, maps.alpha, grad_parts.contiguous(), grad_sigma,
        grad_d_hat, grad_voxel, batch * rays * samples, *maps.shape_arguments(),
        PSI=maps.options.psi, BLOCK_S=SAMPLE_BLOCK, BLOCK_K=_pow2(parts))
    return grad_voxel


def _launch_features(maps: _Maps, scale: torch.Tensor) -> torch.Tensor:
    """(B, rays, C) sum over samples of scale (B, rays, N) times the fused feature (Eqs. 4, 8)."""
    batch, rays = maps.points.shape[:2]
    parts, channels = maps.table.shape[1], maps.table.shape[-1]
    out = torch.empty(batch, rays, channels, dtype=maps.compute, device=maps.points.device)
    block = min(_pow2(channels), CHANNEL_BLOCK)
    maps.kernels.features_forward[(batch * rays, _blocks(channels, block))](
        maps.table, maps.sigma2d, maps.d_hat, maps.points, scale.contiguous(), maps.alpha, out,
        channels, *maps.table.stride(), *maps.shape_arguments(), PSI=maps.options.psi,
        DENSITY=maps.options.fusion == "density", BLOCK_K=_pow2(parts), BLOCK_C=block)
    return out


def _launch_features_backward(
    maps: _Maps,
    scale: torch.Tensor,
    grad_feature: torch.Tensor,
    grad_table: torch.Tensor | None,
    grad_sigma: torch.Tensor,
    grad_d_hat: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adds the feature kernel's map gradients to grad_table (B, K, H, W, C, if given),
    grad_sigma and grad_d_hat; returns its gradients with respect to the scales (B, rays, N)
    and the samples' voxel coordinates (B, rays, N, 3)."""
    batch, rays, samples = maps.points.shape[:3]
    parts, channels = maps.table.shape[1], maps.table.shape[-1]
    block = min(_pow2(channels), CHANNEL_BLOCK)
    channel_blocks = _blocks(channels, block)
    # per (channel block, corner, sample) partial sums: no atomics, summed below
    grad_scale = torch.empty(channel_blocks, 4, batch, rays, samples, dtype=maps.compute,
                             device=scale.device)
    grad_voxel = torch.empty(*grad_scale.shape, 3, dtype=maps.compute, device=scale.device)
    maps.kernels.features_backward[(batch * rays, channel_blocks)](
        maps.table, maps.sigma2d, maps.d_hat, maps.points, scale.contiguous(), maps.alpha,
        grad_feature.contiguous(), grad_table if grad_table is not None else grad_sigma,
        grad_sigma, grad_d_hat, grad_scale, grad_voxel, channels, *maps.table.stride(),
        *maps.shape_arguments(), PSI=maps.options.psi, DENSITY=maps.options.fusion == "density",
        GRAD_TABLE=grad_table is not None, BLOCK_K=_pow2(parts), BLOCK_C=block)
    return grad_scale.sum((0, 1)), grad_voxel.sum((0, 1))


def _pow2(n: int) -> int:
    """The smallest power of two >= n (Triton block sizes)."""
    return 1 << max(n - 1, 0).bit_length()


def _blocks(n: int, block: int) -> int:
    return -(-n // block)


def _to(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if x is None else x.to(dtype)


def _result_type(*tensors: torch.Tensor | None) -> torch.dtype:
    """The floating dtype of the outputs: the inputs' promoted dtype, as PyTorch's ops give."""
    dtypes = [x.dtype for x in tensors if x is not None]
    return functools.reduce(torch.promote_types, dtypes)


# ------------------------------------------------------------------------------------------
# Triton source. Built by `_kernels` in a namespace holding `tl` and one another: helpers work
# on blocks of any shape (the density kernels' (samples, parts), the feature kernels' scalars).


def _psi(diff, alpha, PSI: tl.constexpr):
    """psi(d_hat - z) and its derivative with respect to d_hat (Eq. 7; PSI_CODES)."""
    if PSI == 0:  # gaussian: exp(-alpha x^2)
        psi = tl.exp(-alpha * (diff * diff))
        slope = -2 * alpha * diff * psi
    elif PSI == 1:  # inverse_abs: 1 / (1 + alpha |x|); slope 0 at x = 0, as autograd's abs
        psi = 1 / (1 + alpha * tl.abs(diff))
        sign = tl.where(diff > 0, 1.0, 0.0) - tl.where(diff < 0, 1.0, 0.0)
        slope = -alpha * sign * psi * psi
    else:  # inverse_square: 1 / (1 + alpha x^2)
        psi = 1 / (1 + alpha * (diff * diff))
        slope = -2 * alpha * diff * psi * psi
    return psi, slope


def _voxel(points_ptr, sample, mask, H, W, D, alpha):
    """Voxel coordinates (ix, iy, iz) of samples as grid_sample(align_corners=True) computes
    them (`models.lifting._corners`; y flipped as `models.camera.world_to_grid`)."""
    px = tl.load(points_ptr + sample * 3, mask=mask, other=0).to(alpha.dtype)
    py = tl.load(points_ptr + sample * 3 + 1, mask=mask, other=0).to(alpha.dtype)
    pz = tl.load(points_ptr + sample * 3 + 2, mask=mask, other=0).to(alpha.dtype)
    return (px + 1) / 2 * (W - 1), (-py + 1) / 2 * (H - 1), (pz + 1) / 2 * (D - 1)


def _corner(ix, iy, CX: tl.constexpr, CY: tl.constexpr, H, W):
    """The xy-corner (floor(ix) + CX, floor(iy) + CY): its bilinear weight (0 outside the
    grid: zero padding), the weight's derivatives in ix and iy, and its row and column
    (clamped to the grid, int32: a corner outside reads a border pixel with weight 0)."""
    x0 = tl.floor(ix)
    y0 = tl.floor(iy)
    fx = ix - x0
    fy = iy - y0
    x = x0 + CX
    y = y0 + CY
    inside = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    on = tl.where(inside, 1.0, 0.0)
    if CX == 1:
        wx = fx
        dwx = on
    else:
        wx = 1 - fx
        dwx = -on
    if CY == 1:
        wy = fy
        dwy = on
    else:
        wy = 1 - fy
        dwy = -on
    row = tl.minimum(tl.maximum(y, 0), H - 1).to(tl.int32)
    column = tl.minimum(tl.maximum(x, 0), W - 1).to(tl.int32)
    return wx * wy * on, dwx * wy, wx * dwy, row, column


def _lift(d_hat, iz, alpha, D, PSI: tl.constexpr):
    """A = psi(d_hat - z) lerped between the depth nodes z0 = floor(iz) and z0 + 1 (zero
    outside 0..D-1), and its derivatives with respect to d_hat and iz."""
    z0 = tl.floor(iz)
    fz = iz - z0
    on0 = tl.where((z0 >= 0) & (z0 <= D - 1), 1.0, 0.0)
    on1 = tl.where((z0 + 1 >= 0) & (z0 + 1 <= D - 1), 1.0, 0.0)
    psi0, slope0 = _psi(d_hat - z0, alpha, PSI)
    psi1, slope1 = _psi(d_hat - (z0 + 1), alpha, PSI)
    w0 = (1 - fz) * on0
    w1 = fz * on1
    return w0 * psi0 + w1 * psi1, w0 * slope0 + w1 * slope1, on1 * psi1 - on0 * psi0


def _any(values):
    """Whether a block holds a non-zero (or NaN) value. Counted in integers: the interpreter
    of Triton 3.8 cannot broadcast the result of a float comparison of a reduction."""
    return tl.sum((values != 0).to(tl.int32), axis=0) > 0


def _densities_forward(
    sigma_ptr, d_hat_ptr, points_ptr, alpha_ptr, out_ptr, total,
    R, N, K, H, W, D, sb, sk, sh, sw, db, dk, dh, dw,
    PSI: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[s, k] = sum_c w_xy,c A_k,c sigma_k[c] for BLOCK_S flat samples s (Eqs. 6, 11)."""
    sample = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)  # (BLOCK_S,)
    part = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    valid = sample < total
    mask = valid[:, None] & (part < K)[None, :]  # (BLOCK_S, BLOCK_K)
    batch = (sample // (R * N))[:, None]
    alpha = tl.load(alpha_ptr)
    ix, iy, iz = _voxel(points_ptr, sample, valid, H, W, D, alpha)
    out = tl.zeros([BLOCK_S, BLOCK_K], dtype=alpha.dtype)
    for corner in tl.static_range(4):
        w_xy, _, _, row, column = _corner(ix, iy, corner % 2, corner // 2, H, W)
        row, column = row[:, None], column[:, None]
        d_hat = tl.load(d_hat_ptr + batch * db + part[None, :] * dk + row * dh + column * dw,
                        mask=mask, other=0).to(alpha.dtype)
        sigma = tl.load(sigma_ptr + batch * sb + part[None, :] * sk + row * sh + column * sw,
                        mask=mask, other=0).to(alpha.dtype)
        lifted, _, _ = _lift(d_hat, iz[:, None], alpha, D, PSI)
        out += w_xy[:, None] * (lifted * sigma)
    tl.store(out_ptr + sample[:, None] * K + part[None, :], out, mask=mask)


def _densities_backward(
    sigma_ptr, d_hat_ptr, points_ptr, alpha_ptr, grad_ptr, grad_sigma_ptr, grad_d_hat_ptr,
    grad_voxel_ptr, total, R, N, K, H, W, D, sb, sk, sh, sw, db, dk, dh, dw,
    PSI: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Gradients of `_densities_forward` for its output gradient grad[s, k]: atomic adds into
    the contiguous (B, K, H, W) grad_sigma and grad_d_hat, and grad_voxel[s] (3 coordinates)."""
    sample = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    part = tl.arange(0, BLOCK_K)
    valid = sample < total
    mask = valid[:, None] & (part < K)[None, :]
    batch = (sample // (R * N))[:, None]
    alpha = tl.load(alpha_ptr)
    grad = tl.load(grad_ptr + sample[:, None] * K + part[None, :], mask=mask, other=0)
    ix, iy, iz = _voxel(points_ptr, sample, valid, H, W, D, alpha)
    grad_ix = tl.zeros([BLOCK_S], dtype=alpha.dtype)
    grad_iy = tl.zeros([BLOCK_S], dtype=alpha.dtype)
    grad_iz = tl.zeros([BLOCK_S], dtype=alpha.dtype)
    for corner in tl.static_range(4):
        w_xy, dw_dx, dw_dy, row, column = _corner(ix, iy, corner % 2, corner // 2, H, W)
        row, column = row[:, None], column[:, None]
        d_hat = tl.load(d_hat_ptr + batch * db + part[None, :] * dk + row * dh + column * dw,
                        mask=mask, other=0).to(alpha.dtype)
        sigma = tl.load(sigma_ptr + batch * sb + part[None, :] * sk + row * sh + column * sw,
                        mask=mask, other=0).to(alpha.dtype)
        lifted, slope, dlift_dz = _lift(d_hat, iz[:, None], alpha, D, PSI)
        node = (batch * K + part[None, :]) * (H * W) + row * W + column
        hit = mask & (w_xy != 0)[:, None]
        tl.atomic_add(grad_sigma_ptr + node, grad * w_xy[:, None] * lifted, mask=hit)
        tl.atomic_add(grad_d_hat_ptr + node, grad * w_xy[:, None] * sigma * slope, mask=hit)
        grad_ix += tl.sum(grad * lifted * sigma, axis=1) * dw_dx
        grad_iy += tl.sum(grad * lifted * sigma, axis=1) * dw_dy
        grad_iz += tl.sum(grad * dlift_dz * sigma, axis=1) * w_xy
    tl.store(grad_voxel_ptr + sample * 3, grad_ix, mask=valid)
    tl.store(grad_voxel_ptr + sample * 3 + 1, grad_iy, mask=valid)
    tl.store(grad_voxel_ptr + sample * 3 + 2, grad_iz, mask=valid)


def _features_forward(
    table_ptr, sigma_ptr, d_hat_ptr, points_ptr, scale_ptr, alpha_ptr, out_ptr, C,
    tb, tk, th, tw, tc, R, N, K, H, W, D, sb, sk, sh, sw, db, dk, dh, dw,
    PSI: tl.constexpr, DENSITY: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out[ray, c] = sum_i scale_i sum_corner,k w_xy A_k g_k f_k[corner, c] for one ray and
    BLOCK_C channels (Eqs. 4-5, 8; g = sigma^2d if DENSITY else 1). Per corner, the
    coefficients of consecutive samples on the same pixel are summed ("run") before that
    pixel's (K, BLOCK_C) features are read once."""
    ray = tl.program_id(0)  # b * R + r
    batch = ray // R
    part = tl.arange(0, BLOCK_K)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    part_ok = part < K
    tile_ok = part_ok[:, None] & (channel < C)[None, :]  # (BLOCK_K, BLOCK_C)
    tile_ptr = table_ptr + batch * tb + part[:, None] * tk + channel[None, :] * tc
    alpha = tl.load(alpha_ptr)
    feature = tl.zeros([BLOCK_C], dtype=alpha.dtype)
    for corner in tl.static_range(4):
        run = tl.zeros([BLOCK_K], dtype=alpha.dtype)  # summed coefficients of the run's pixel
        run_row = tl.full([], -1, tl.int32)
        run_column = tl.full([], -1, tl.int32)
        for i in range(N):
            sample = ray * N + i
            ix, iy, iz = _voxel(points_ptr, sample, True, H, W, D, alpha)
            w_xy, _, _, row, column = _corner(ix, iy, corner % 2, corner // 2, H, W)
            d_hat = tl.load(d_hat_ptr + batch * db + part * dk + row * dh + column * dw,
                            mask=part_ok, other=0).to(alpha.dtype)
            lifted, _, _ = _lift(d_hat, iz, alpha, D, PSI)
            if DENSITY:
                lifted *= tl.load(sigma_ptr + batch * sb + part * sk + row * sh + column * sw,
                                  mask=part_ok, other=0).to(alpha.dtype)
            coef = tl.load(scale_ptr + sample).to(alpha.dtype) * w_xy * lifted  # (BLOCK_K,)
            new = (row != run_row) | (column != run_column)
            tile = tl.load(tile_ptr + run_row * th + run_column * tw,
                           mask=tile_ok & (new & _any(run)), other=0).to(alpha.dtype)
            feature += tl.sum(run[:, None] * tile, axis=0)
            run = tl.where(new, coef, run + coef)
            run_row = row
            run_column = column
        tile = tl.load(tile_ptr + run_row * th + run_column * tw, mask=tile_ok & _any(run),
                       other=0).to(alpha.dtype)
        feature += tl.sum(run[:, None] * tile, axis=0)
    tl.store(out_ptr + ray * C + channel, feature, mask=channel < C)


def _features_backward(
    table_ptr, sigma_ptr, d_hat_ptr, points_ptr, scale_ptr, alpha_ptr, grad_ptr,
    grad_table_ptr, grad_sigma_ptr, grad_d_hat_ptr, grad_scale_ptr, grad_voxel_ptr, C,
    tb, tk, th, tw, tc, R, N, K, H, W, D, sb, sk, sh, sw, db, dk, dh, dw,
    PSI: tl.constexpr, DENSITY: tl.constexpr, GRAD_TABLE: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Gradients of `_features_forward` for the output gradient grad[ray, c]: atomic adds
    into the contiguous grad_table (B, K, H, W, C) (if GRAD_TABLE), grad_sigma and grad_d_hat
    (B, K, H, W), once per run; plain stores of this program's partial sums of the gradients
    of the scale and the voxel coordinates, grad_scale (blocks, 4, S), grad_voxel (.., 3)."""
    ray = tl.program_id(0)
    block = tl.program_id(1)
    total = tl.num_programs(0) * N  # S, the flat sample count
    batch = ray // R
    part = tl.arange(0, BLOCK_K)
    channel = block * BLOCK_C + tl.arange(0, BLOCK_C)
    part_ok = part < K
    tile_ok = part_ok[:, None] & (channel < C)[None, :]
    tile_ptr = table_ptr + batch * tb + part[:, None] * tk + channel[None, :] * tc
    node = (batch * K + part) * (H * W)  # (BLOCK_K,) first pixel of the contiguous maps
    grad_tile_ptr = grad_table_ptr + node[:, None] * C + channel[None, :]
    alpha = tl.load(alpha_ptr)
    grad = tl.load(grad_ptr + ray * C + channel, mask=channel < C, other=0).to(alpha.dtype)
    for corner in tl.static_range(4):
        run_table = tl.zeros([BLOCK_K], dtype=alpha.dtype)  # the run's d out / d f_k[pixel]
        run_d_hat = tl.zeros([BLOCK_K], dtype=alpha.dtype)
        run_sigma = tl.zeros([BLOCK_K], dtype=alpha.dtype)
        dot = tl.zeros([BLOCK_K], dtype=alpha.dtype)  # <f_k[pixel], grad> over the block
        run_row = tl.full([], -1, tl.int32)
        run_column = tl.full([], -1, tl.int32)
        for i in range(N):
            sample = ray * N + i
            ix, iy, iz = _voxel(points_ptr, sample, True, H, W, D, alpha)
            w_xy, dw_dx, dw_dy, row, column = _corner(ix, iy, corner % 2, corner // 2, H, W)
            d_hat = tl.load(d_hat_ptr + batch * db + part * dk + row * dh + column * dw,
                            mask=part_ok, other=0).to(alpha.dtype)
            lifted, slope, dlift_dz = _lift(d_hat, iz, alpha, D, PSI)
            gain = tl.full([BLOCK_K], 1.0, alpha.dtype)  # g_k of the module docstring
            if DENSITY:
                gain = tl.load(sigma_ptr + batch * sb + part * sk + row * sh + column * sw,
                               mask=part_ok, other=0).to(alpha.dtype)
            scale = tl.load(scale_ptr + sample).to(alpha.dtype)
            new = (row != run_row) | (column != run_column)
            # The finished run's scatter, then the new pixel's features once.
            pixel = run_row * W + run_column
            if GRAD_TABLE:
                tl.atomic_add(grad_tile_ptr + pixel * C, run_table[:, None] * grad[None, :],
                              mask=tile_ok & (new & _any(run_table)))
            tl.atomic_add(grad_d_hat_ptr + node + pixel, run_d_hat,
                          mask=part_ok & (new & _any(run_d_hat)))
            if DENSITY:
                tl.atomic_add(grad_sigma_ptr + node + pixel, run_sigma,
                              mask=part_ok & (new & _any(run_sigma)))
            # (not skipped outside the grid: a run may go on inside on the same clamped pixel)
            tile = tl.load(tile_ptr + row * th + column * tw, mask=tile_ok & new,
                           other=0).to(alpha.dtype)
            dot = tl.where(new, tl.sum(tile * grad[None, :], axis=1), dot)
            grad_coef = scale * dot  # d out / d (w_xy A_k g_k), (BLOCK_K,)
            partial = (block * 4 + corner) * total + sample
            tl.store(grad_scale_ptr + partial, tl.sum(w_xy * lifted * gain * dot, axis=0))
            tl.store(grad_voxel_ptr + partial * 3,
                     tl.sum(grad_coef * lifted * gain, axis=0) * dw_dx)
            tl.store(grad_voxel_ptr + partial * 3 + 1,
                     tl.sum(grad_coef * lifted * gain, axis=0) * dw_dy)
            tl.store(grad_voxel_ptr + partial * 3 + 2,
                     tl.sum(grad_coef * dlift_dz * gain, axis=0) * w_xy)
            step_table = scale * w_xy * lifted * gain
            step_d_hat = grad_coef * w_xy * gain * slope
            step_sigma = grad_coef * w_xy * lifted
            run_table = tl.where(new, step_table, run_table + step_table)
            run_d_hat = tl.where(new, step_d_hat, run_d_hat + step_d_hat)
            run_sigma = tl.where(new, step_sigma, run_sigma + step_sigma)
            run_row = row
            run_column = column
        pixel = run_row * W + run_column
        if GRAD_TABLE:
            tl.atomic_add(grad_tile_ptr + pixel * C, run_table[:, None] * grad[None, :],
                          mask=tile_ok & _any(run_table))
        tl.atomic_add(grad_d_hat_ptr + node + pixel, run_d_hat, mask=part_ok & _any(run_d_hat))
        if DENSITY:
            tl.atomic_add(grad_sigma_ptr + node + pixel, run_sigma,
                          mask=part_ok & _any(run_sigma))


_TRITON_SOURCE = (_psi, _voxel, _corner, _lift, _any, _densities_forward, _densities_backward,
                  _features_forward, _features_backward)


def _kernels() -> types.SimpleNamespace:
    """The kernels, jit-compiled, or interpreted if triton was imported under TRITON_INTERPRET=1
    (raises ValueError if the variable changed since)."""
    import triton.language
    from triton.runtime.interpreter import InterpretedFunction

    imported_interpreting = isinstance(triton.language.zeros, InterpretedFunction)
    if imported_interpreting != _interpreting():
        raise ValueError(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r} but triton "
                         f"was imported {'with' if imported_interpreting else 'without'} it; "
                         "set it before the process first imports triton")
    return _build_kernels(imported_interpreting)


@functools.cache
def _build_kernels(interpreting: bool) -> types.SimpleNamespace:
    """The kernels for Triton's mode (`interpreting` is the cache key). Each function is
    rebuilt on a namespace of its own holding `tl` and the wrapped helpers, since Triton
    resolves the names a kernel calls in its globals."""
    import triton
    import triton.language

    namespace: dict[str, Any] = {"tl": triton.language, "__name__": __name__}
    for function in _TRITON_SOURCE:
        namespace[function.__name__] = triton.jit(types.FunctionType(
            function.__code__, namespace, function.__name__, function.__defaults__))
    return types.SimpleNamespace(**{name.lstrip("_"): namespace[name] for name in (
        "_densities_forward", "_densities_backward", "_features_forward",
        "_features_backward")})
