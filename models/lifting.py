"""3D-SSGAN's depth-guided 2D-to-3D lifting and its renderers (paper Secs. 3.2-3.3, Eqs. 4-11).

Each part k owns 2D maps on an H x W grid: features f_k^2d (C channels), a density sigma_k^2d
and an absolute depth d_hat_k^2d in depth-grid index units (0 = back, D-1 = front; the model
turns relative depths into absolute ones). Lifting soft-unprojects them to a (D, H, W) volume:

    f_k^3d(x, y, z) = psi_k(x, y, z) f_k^2d(x, y),  sigma_k^3d = psi_k sigma_k^2d   (Eqs. 5-6)
    psi_k(x, y, z) = psi(d_hat_k^2d(x, y) - z), z in {0, ..., D-1}                   (Eq. 7)

The parts are summed into fused volumes (Eq. 8), which are sampled trilinearly at the ray
points and rendered with NeRF weights (Eqs. 2-4); the per-part densities at the points give the
initial semantic mask m_init (Eqs. 10-11). The volume occupies the world box [-1, 1]^3 with the
grid mapping of `models.camera.world_to_grid`; trilinear sampling follows
`torch.nn.functional.grid_sample(align_corners=True, padding_mode="zeros")`.

Two implementations behind one interface (`render_lifted`):
    `render_lifted_reference` builds the (B, K, C, D, H, W) volumes and calls grid_sample; it
        is the oracle for tests.
    `render_lifted_fast` never builds a volume. Sampling psi_k(x, y, z) g_k(x, y) trilinearly
        is sum over the 4 xy-corners of w_xy g_k[corner] * (sum over the 2 z-corners of
        w_z psi_k(z, corner)), so every sampled value is a scalar coefficient times a 2D map
        entry; the rendered feature is a sparse (rays x K*H*W) matrix times the feature maps,
        computed with embedding_bag kernels and differentiable to any order. psi_k is evaluated
        once per grid node (K*D*H*W scalars) and read at the samples' corners.
    `models.lifting_triton.render_lifted_triton` computes what the fast path computes in fused
        Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1 for tests); its module docstring
        says what is fused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from models.camera import world_to_grid
from models.config import Schema
from models.precision import float32
from models.rendering import accumulate, expected_depth, nerf_weights


def _gaussian(diff: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.exp(-alpha * diff.square())  # Eq. 7


def _inverse_abs(diff: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 / (1 + alpha * diff.abs())  # Sec. 4 ablation: symmetric inverse-proportional


def _inverse_square(diff: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 / (1 + alpha * diff.square())  # Sec. 4 ablation: symmetric inverse-proportional


# name -> psi(d_hat - z, alpha), values in (0, 1], 1 on the predicted depth
PSI_FUNCTIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "gaussian": _gaussian,
    "inverse_abs": _inverse_abs,
    "inverse_square": _inverse_square,
}
# Eq. 10 with w_i = the NeRF weights, or uniform weights (ablation, warm-up; `_mask_weights`)
MASK_WEIGHTS = ("nerf", "uniform")
# "triton" (models.lifting_triton) is not the default: choosing it on CUDA needs a GPU measurement
PATHS = ("fast", "reference", "triton")
# Eq. 8 sums the parts' lifted features ("sum"); "density" averages the parts' 2D features
# weighted by their lifted densities, f_fused = sum_k sigma_k^3d f_k^2d / sum_k sigma_k^3d, as
# SSGAN and CNeRF compose features by their masks (not in the paper; an option to compare).
FUSIONS = ("sum", "density")
FUSION_EPS = 1e-8  # keeps f_fused finite where no part has density


class LiftingConfig(Schema):
    """The lifting function psi of Eq. 7 (lifting ablation, paper Sec. 4.2): the one settings
    type, `model.lifting` of the 3D-SSGAN config and the argument of the renderers."""

    function: Literal["gaussian", "inverse_abs", "inverse_square"] = "gaussian"  # PSI_FUNCTIONS
    alpha: float = Field(1.0, gt=0)  # sharpness of psi, per depth-index unit (squared or not)

    def psi(self, diff: torch.Tensor) -> torch.Tensor:
        """psi(d_hat - z) elementwise, for depth differences in depth-index units (Eq. 7)."""
        return PSI_FUNCTIONS[self.function](diff, self.alpha)


@dataclass(frozen=True)
class LiftedRender:
    """What the lifted renderer returns for a batch of rays."""

    feature: torch.Tensor  # (B, rays, C) f_render = sum_i w_i f_fused(X_i), Eqs. 4, 8
    mask_logits: torch.Tensor  # (B, rays, K) m_init, Eq. 10; softmax over K gives Eq. 9
    weights: torch.Tensor  # (B, rays, N) NeRF weights of sigma_fused, Eqs. 2-3, 8
    depth: torch.Tensor  # (B, rays) expected ray distance, head units


def render_lifted_reference(
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
    """Lift, fuse and render by materialising the part volumes (the test oracle).

    Arguments as in `render_lifted`. Peak memory, forward + backward, with s bytes per element:
    about s * B * (2*K*C*D*H*W + 2*C*D*H*W + 3*K*D*H*W + 3*rays*N*(C + K)); the first term is
    the two broadcast gradients of Eq. 5's product psi_k * f_k^2d in the backward pass (the
    forward pass holds f_k^3d, one such volume). Measured on CPU, float32, B=1, K=13, D=32,
    H=W=64, 64x64 rays, N=12: 0.9 GiB at C=64, 3.4 GiB at C=256.
    """
    _check(f2d, sigma2d, d_hat, volume_depth, points, t, mask_weights, fusion)
    psi = _node_psi(d_hat, volume_depth, lifting)  # (B, K, D, H, W) Eq. 7
    sigma3d = psi * sigma2d[:, :, None]  # (B, K, D, H, W) Eq. 6
    lift = sigma3d if fusion == "density" else psi  # the factor of f_k^2d in the fused volume
    f3d = lift[:, :, None] * f2d[:, :, :, None]  # (B, K, C, D, H, W) Eq. 5
    f_fused = f3d.sum(1)  # (B, C, D, H, W) Eq. 8 (for "density": its numerator)
    grid = world_to_grid(points)[:, None]  # (B, 1, rays, N, 3)

    def sample(volume: torch.Tensor) -> torch.Tensor:  # (B, ch, D, H, W) -> (B, rays, N, ch)
        return F.grid_sample(
            volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, :, 0].permute(0, 2, 3, 1)

    f_points = sample(f_fused)  # (B, rays, N, C)
    sigma_parts = sample(sigma3d)  # (B, rays, N, K) Eq. 11
    if weights is None:  # (B, rays, N) Eqs. 2-3 on sigma_fused, Eq. 8
        weights = nerf_weights(sigma_parts.sum(-1), t)
    if fusion == "density":
        f_points = f_points / (sigma_parts.sum(-1, keepdim=True) + FUSION_EPS)
    return LiftedRender(
        feature=accumulate(weights, f_points),  # (B, rays, C) Eq. 4
        mask_logits=accumulate(_mask_weights(weights, mask_weights), sigma_parts),  # Eq. 10
        weights=weights,
        depth=expected_depth(weights, t),
    )


def render_lifted_fast(
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
    ray_chunk: int | None = None,
    fusion: str = "sum",
) -> LiftedRender:
    """Lift, fuse and render without materialising any volume; equal to the reference path.

    Arguments as in `render_lifted`. Allocates no tensor of size K*C*D*H*W, rays*N*K*C or
    rays*N*C. Peak memory, forward + backward, with s bytes per element: about
    s * B * (K*H*W*C + rays*C) for the gradient of the channels-last feature table and the
    output (another s * B * K*H*W*C for the table unless f2d is stored channels last, i.e. is a
    view of a contiguous (B, K, H, W, C) tensor, as 3D-SSGAN's local generators make it),
    plus about 12*s * B*R*N*4*K for the per-(sample, xy-corner, part) coefficients, indices and
    the autograd state that scales with them (the rate measured on CPU: 48 bytes each in
    float32), plus 3*s * B*K*D*H*W for psi and the part densities at the grid nodes.
    R is the number of rays, or `ray_chunk` when given: the rays are then rendered that many
    at a time and, when gradients are recorded, each chunk's terms are recomputed in the
    backward pass instead of kept (activation checkpointing: one more forward pass of the
    per-sample terms). Measured on CPU, float32, B=1, K=13, D=32, H=W=64, 64x64 rays, C=256,
    f2d channels last: 0.17 GiB at N=12 and 0.39 GiB at N=36 without chunks, 0.16 and 0.18 GiB
    in chunks of 512 rays (the reference path: 3.4 GiB). Indices are int32 where they fit.
    Differentiable to any order.
    """
    _check(f2d, sigma2d, d_hat, volume_depth, points, t, mask_weights, fusion)
    batch, parts, channels, height, width = f2d.shape
    rays = points.shape[1]
    psi = _node_psi(d_hat, volume_depth, lifting)  # (B, K, D, H, W) Eq. 7
    nodes = _NodeTable.of(torch.cat([psi, psi * sigma2d[:, :, None]], dim=1))  # Eqs. 6-7, 2K
    # (B*K*H*W, C): a view when f2d is stored channels last, else a copy
    table = f2d.permute(0, 1, 3, 4, 2).reshape(batch * parts * height * width, channels)
    chunk = ray_chunk or rays
    pieces = []
    for start in range(0, rays, chunk):
        ray_slice = slice(start, start + chunk)
        arguments = (nodes, table, points[:, ray_slice], t[:, ray_slice],
                     None if weights is None else weights[:, ray_slice], mask_weights, fusion)
        if chunk < rays and torch.is_grad_enabled():
            pieces.append(checkpoint(_render_rays, *arguments, use_reentrant=False))
        else:
            pieces.append(_render_rays(*arguments))
    return LiftedRender(*(torch.cat(field, dim=1) if len(pieces) > 1 else field[0]
                          for field in zip(*pieces, strict=True)))


def _render_rays(
    nodes: _NodeTable,
    table: torch.Tensor,
    points: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor | None,
    mask_weights: str,
    fusion: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fields of `LiftedRender` for some rays: `render_lifted_fast` after its node and
    feature tables (table: (B*K*H*W, C) rows of the 2D feature maps, channels last)."""
    batch, rays, samples = points.shape[:3]
    parts = nodes.channels // 2
    pixel, psi_coef, sigma_coef = _corner_terms(nodes, points)  # (B, rays, N, 4, K) each
    sigma_parts = sigma_coef.sum(3)  # (B, rays, N, K) sigma_k^3d at the points, Eqs. 6, 11
    if weights is None:  # (B, rays, N) Eqs. 2-3 on sigma_fused, Eq. 8
        weights = nerf_weights(sigma_parts.sum(-1), t)
    scale, coef = weights, psi_coef
    if fusion == "density":  # f_fused = sum_k sigma_k^3d f_k^2d / sigma_fused
        scale, coef = weights / (sigma_parts.sum(-1) + FUSION_EPS), sigma_coef

    # Eqs. 4, 5, 8: f_render = sum over (sample, corner, part) of w_i coef f_k[corner]: a sparse
    # (B*rays, B*K*H*W) matrix, one row per ray, times the (B*K*H*W, C) feature table.
    pixels = nodes.height * nodes.width
    offsets = torch.arange(batch * parts, device=table.device).view(batch, 1, 1, 1, parts)
    index_dtype = _index_dtype(max(table.shape[0], pixel.numel() * parts))
    rows = (pixel[..., None] + offsets * pixels).to(index_dtype)  # (B, rays, N, 4, K)
    rays_by_pixels = _SparseRows(rows.view(-1), samples * 4 * parts, table.shape[0])
    entries = (scale[..., None, None] * coef).view(-1)  # (B*rays*N*4*K,)
    feature = _SparseMatmul.apply(entries, table, rays_by_pixels)  # (B*rays, C)
    return (feature.view(batch, rays, -1),  # (B, rays, C)
            accumulate(_mask_weights(weights, mask_weights), sigma_parts),  # Eq. 10
            weights,
            expected_depth(weights, t))


@float32  # every path renders in float32 under autocast (models.precision)
def render_lifted(
    f2d: torch.Tensor,
    sigma2d: torch.Tensor,
    d_hat: torch.Tensor,
    volume_depth: int,
    points: torch.Tensor,
    t: torch.Tensor,
    *,
    lifting: LiftingConfig,
    mask_weights: str = "nerf",
    path: str = "fast",
    weights: torch.Tensor | None = None,
    ray_chunk: int | None = None,
    fusion: str = "sum",
) -> LiftedRender:
    """Render the lifted, fused part volumes along rays (Eqs. 2-11).

    f2d: (B, K, C, H, W) part features f_k^2d; sigma2d: (B, K, H, W) non-negative part
    densities; d_hat: (B, K, H, W) absolute part depths in depth-index units (0..D-1, back to
    front); volume_depth: D; points: (B, rays, N, 3) world points on the rays; t: (B, rays, N)
    their depths along the rays. mask_weights: "nerf" (Eq. 10) or "uniform" (w_i = 1).
    path: "fast" (default), "reference" or "triton" (fused kernels: CUDA, or CPU under
    TRITON_INTERPRET=1); see their docstrings for peak memory.
    weights: (B, rays, N) quadrature weights of the samples to use instead of the NeRF weights
    of their densities, for samples placed by a previous pass (`quantile_depths`).
    ray_chunk: fast path only: render this many rays at a time, recomputing their terms in
    the backward pass (less memory, one more forward pass of the per-sample terms).
    fusion: "sum" (Eq. 8) or "density" (see FUSIONS).
    """
    if path not in PATHS:
        raise ValueError(f"lifting path {path!r} is unknown; choices: {', '.join(PATHS)}")
    if path != "fast" and ray_chunk:
        raise ValueError("ray_chunk applies to the fast lifting path only")
    if path == "triton":
        from models.lifting_triton import render_lifted_triton  # imports models.lifting

        return render_lifted_triton(f2d, sigma2d, d_hat, volume_depth, points, t,
                                    lifting=lifting, mask_weights=mask_weights, weights=weights,
                                    fusion=fusion)
    if path == "reference":
        return render_lifted_reference(f2d, sigma2d, d_hat, volume_depth, points, t,
                                       lifting=lifting, mask_weights=mask_weights,
                                       weights=weights, fusion=fusion)
    return render_lifted_fast(f2d, sigma2d, d_hat, volume_depth, points, t, lifting=lifting,
                              mask_weights=mask_weights, weights=weights, ray_chunk=ray_chunk,
                              fusion=fusion)


def _corners(
    points: torch.Tensor, height: int, width: int, volume_depth: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trilinear sampling positions of world points in the (D, H, W) grid.

    Returns pixel (B, rays, N, 4), the H*W index of each point's 4 xy-corners; w_xy
    (B, rays, N, 4), their bilinear weights, zero outside the grid (zero padding); z0
    (B, rays, N), the depth node below the point (may lie outside 0..D-1); fz (B, rays, N), the
    point's fraction of the way to z0 + 1.
    """
    # Voxel coordinates as grid_sample(align_corners=True) computes them: (B, rays, N) each.
    grid = world_to_grid(points)
    ix = (grid[..., 0] + 1) / 2 * (width - 1)
    iy = (grid[..., 1] + 1) / 2 * (height - 1)
    iz = (grid[..., 2] + 1) / 2 * (volume_depth - 1)
    x0, y0, z0 = ix.floor(), iy.floor(), iz.floor()
    fx, fy = ix - x0, iy - y0
    corner_x = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1)  # (B, rays, N, 4)
    corner_y = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1)  # (B, rays, N, 4)
    w_xy = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    w_xy = w_xy * _inside(corner_x, width) * _inside(corner_y, height)  # (B, rays, N, 4)
    row, column = corner_y.clamp(0, height - 1).long(), corner_x.clamp(0, width - 1).long()
    pixel = row * width + column  # (B, rays, N, 4) index into H*W; clamped corners weigh 0
    return pixel, w_xy, z0, iz - z0


def _node_psi(d_hat: torch.Tensor, volume_depth: int, lifting: LiftingConfig) -> torch.Tensor:
    """(B, K, D, H, W) psi_k at the grid's depth nodes z = 0..D-1 (Eq. 7): scalars only."""
    z = torch.arange(volume_depth, device=d_hat.device, dtype=d_hat.dtype)  # (D,)
    return lifting.psi(d_hat[:, :, None] - z[:, None, None])


@dataclass(frozen=True)
class _NodeTable:
    """Values at the grid nodes, (B*H*W*D, ch) with z fastest, read at sample corners."""

    values: torch.Tensor
    batch: int
    depth: int
    height: int
    width: int

    @classmethod
    def of(cls, nodes: torch.Tensor) -> _NodeTable:
        """The table of node values (B, ch, D, H, W)."""
        batch, channels, depth, height, width = nodes.shape
        return cls(nodes.permute(0, 3, 4, 2, 1).reshape(-1, channels), batch, depth, height,
                   width)

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    def at_corners(self, pixel: torch.Tensor, z0: torch.Tensor, fz: torch.Tensor
                   ) -> torch.Tensor:
        """(B, rays, N, 4, ch) the values at each point's xy-corners (`_corners`), linearly
        interpolated between its two depth nodes z0 and z0 + 1 (zero outside the grid)."""
        offsets = torch.arange(self.batch, device=pixel.device).view(self.batch, 1, 1, 1)
        first_node = (offsets * (self.height * self.width) + pixel) * self.depth  # z = 0 rows
        out = 0
        for step, weight in ((0, 1 - fz), (1, fz)):
            z = z0 + step  # (B, rays, N)
            rows = first_node + z.clamp(0, self.depth - 1).long()[..., None]  # (B, rays, N, 4)
            out = out + (weight * _inside(z, self.depth))[..., None, None] * F.embedding(
                rows, self.values)
        return out


def _corner_terms(nodes: _NodeTable, points: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trilinear sampling of the lifted part volumes psi_k g_k as corner coefficients.

    `nodes` holds psi_k and psi_k sigma_k^2d at the grid nodes (2K channels: Eqs. 6-7), so psi
    is evaluated once per node (B*K*D*H*W scalars), not once per sample and corner. Returns
    pixel (B, rays, N, 4), the H*W index of each sample's 4 xy-corners; psi_coef
    (B, rays, N, 4, K) such that the trilinear sample of psi_k g_k (Eqs. 5-7) at each point is
    sum over corners of psi_coef * g_k[pixel], for any 2D map g_k; and sigma_coef, the same for
    sigma_k^3d g_k (Eq. 6): summed over corners, the sampled part densities (Eq. 11).
    """
    parts = nodes.channels // 2
    pixel, w_xy, z0, fz = _corners(points, nodes.height, nodes.width, nodes.depth)
    lifted = w_xy[..., None] * nodes.at_corners(pixel, z0, fz)  # (B, rays, N, 4, 2K)
    return pixel, lifted[..., :parts], lifted[..., parts:]


@float32  # as render_lifted
def lifted_density(
    sigma2d: torch.Tensor,
    d_hat: torch.Tensor,
    volume_depth: int,
    points: torch.Tensor,
    *,
    lifting: LiftingConfig,
) -> torch.Tensor:
    """(B, rays, N) the fused density sigma_fused = sum_k sigma_k^3d at the points (Eqs. 6-8).

    Densities only, from the fused (B, D, H, W) density volume: a pass K times cheaper than the
    full render that locates the surface first (depth-guided sampling). Memory
    O(B * (D*H*W + rays * N * 4)).
    """
    height, width = d_hat.shape[-2:]
    pixel, w_xy, z0, fz = _corners(points, height, width, volume_depth)
    fused = (_node_psi(d_hat, volume_depth, lifting) * sigma2d[:, :, None]).sum(1, keepdim=True)
    return (w_xy * _NodeTable.of(fused).at_corners(pixel, z0, fz)[..., 0]).sum(-1)


class _SparseRows:
    """Structure of a sparse matrix S whose row b holds `length` consecutive entries.

    Entry e sits at row e // length and column columns[e]; its value is given separately, so
    that one structure serves S, S^T and sampled products with the values as tensors. The
    autograd functions below keep only `columns` for their backward passes (as a saved
    tensor, which activation checkpointing may drop and recompute) and rebuild the rest.
    """

    def __init__(self, columns: torch.Tensor, length: int, num_columns: int) -> None:
        self.columns = columns  # (E,) int32 or int64 (`_index_dtype`)
        self.length = length
        self.num_columns = num_columns
        self.row_starts = torch.arange(0, columns.numel(), length, device=columns.device,
                                       dtype=columns.dtype)

    @cached_property
    def row_of(self) -> torch.Tensor:
        """(E,) the row of each entry (needed by derivatives only)."""
        return torch.arange(self.columns.numel(), device=self.columns.device,
                            dtype=self.columns.dtype) // self.length

    @cached_property
    def by_column(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S^T's layout: entries sorted by column (E,), their rows (E,), column starts (cols,)."""
        order = torch.argsort(self.columns).to(self.columns.dtype)  # (E,)
        counts = torch.bincount(self.columns, minlength=self.num_columns)  # (cols,)
        starts = (torch.cumsum(counts, 0) - counts).to(self.columns.dtype)
        return order, self.row_of[order], starts


def _save(ctx: Any, s: _SparseRows, *tensors: torch.Tensor) -> None:
    """Keep `tensors` and the structure's columns for backward, and its sizes."""
    ctx.save_for_backward(*tensors, s.columns)
    ctx.length, ctx.num_columns = s.length, s.num_columns


def _saved(ctx: Any) -> tuple[Any, ...]:
    """What `_save` kept: the tensors, then the rebuilt structure."""
    *tensors, columns = ctx.saved_tensors
    return (*tensors, _SparseRows(columns, ctx.length, ctx.num_columns))


# S @ X, S^T @ Y and the sampled product <Y[row_e], X[column_e]> are the derivatives of one
# another, so each backward calls the others and derivatives of any order (e.g. for path-length
# regularisation) stay sparse: no (E, C) tensor is ever made, unlike embedding_bag's backward.
class _SparseMatmul(torch.autograd.Function):
    """(rows, C) S @ X for the values (E,) of S and a dense X (cols, C)."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, x: torch.Tensor, s: _SparseRows) -> torch.Tensor:
        _save(ctx, s, values, x)
        return F.embedding_bag(s.columns, x, s.row_starts, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, x, s = _saved(ctx)
        grad = grad.contiguous()
        grad_values = _SampledDot.apply(grad, x, s) if ctx.needs_input_grad[0] else None
        grad_x = _SparseMatmulT.apply(values, grad, s) if ctx.needs_input_grad[1] else None
        return grad_values, grad_x, None


class _SparseMatmulT(torch.autograd.Function):
    """(cols, C) S^T @ Y for the values (E,) of S and a dense Y (rows, C)."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, y: torch.Tensor, s: _SparseRows) -> torch.Tensor:
        _save(ctx, s, values, y)
        order, rows, column_starts = s.by_column
        return F.embedding_bag(rows, y, column_starts, mode="sum", per_sample_weights=values[order])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, y, s = _saved(ctx)
        grad = grad.contiguous()
        grad_values = _SampledDot.apply(y, grad, s) if ctx.needs_input_grad[0] else None
        grad_y = _SparseMatmul.apply(values, grad, s) if ctx.needs_input_grad[1] else None
        return grad_values, grad_y, None


class _SampledDot(torch.autograd.Function):
    """(E,) <Y[row_e], X[column_e]> over the entries of S, for Y (rows, C) and X (cols, C)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, x: torch.Tensor, s: _SparseRows) -> torch.Tensor:
        _save(ctx, s, y, x)
        # embedding_bag's own kernel for this product (mode 0 = sum); torch is pinned.
        return torch.ops.aten._embedding_bag_per_sample_weights_backward(
            y, x, s.columns, s.row_starts, s.row_of, 0
        )

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, x, s = _saved(ctx)
        grad = grad.contiguous()
        grad_y = _SparseMatmul.apply(grad, x, s) if ctx.needs_input_grad[0] else None
        grad_x = _SparseMatmulT.apply(grad, y, s) if ctx.needs_input_grad[1] else None
        return grad_y, grad_x, None


def _index_dtype(largest: int) -> torch.dtype:
    """int32 (half the memory of int64) for indices up to `largest` where they fit."""
    return torch.int32 if largest < 2**31 else torch.int64


def _inside(index: torch.Tensor, size: int) -> torch.Tensor:
    """1 where an integer-valued grid index lies in 0..size-1, else 0 (dtype of `index`)."""
    return ((index >= 0) & (index <= size - 1)).to(index.dtype)


def _mask_weights(weights: torch.Tensor, mask_weights: str) -> torch.Tensor:
    """(B, rays, N) the w_i of Eq. 10: the NeRF weights, or uniform weights 1/N.

    The paper calls m_init a "weighted averag[e]" of the sampled densities and its ablation
    sets "w_i to 1"; the NeRF weights sum to at most one, so uniform weights are 1/N: the
    plain average. Literal ones would scale the mask logits with N (3x larger with 36 test
    samples than with 12 in training), so the softmax of Eq. 9 would sharpen at test time.
    """
    if mask_weights == "nerf":
        return weights
    return torch.full_like(weights, 1 / weights.shape[-1])


def _check(
    f2d: torch.Tensor,
    sigma2d: torch.Tensor,
    d_hat: torch.Tensor,
    volume_depth: int,
    points: torch.Tensor,
    t: torch.Tensor,
    mask_weights: str,
    fusion: str,
) -> None:
    """Shapes agree and the mask weighting and fusion are known."""
    if mask_weights not in MASK_WEIGHTS:
        raise ValueError(
            f"mask_weights {mask_weights!r} is unknown; choices: {', '.join(MASK_WEIGHTS)}"
        )
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is unknown; choices: {', '.join(FUSIONS)}")
    batch, parts, _, height, width = f2d.shape
    assert sigma2d.shape == d_hat.shape == (batch, parts, height, width), (
        f"f2d {tuple(f2d.shape)}, sigma2d {tuple(sigma2d.shape)}, d_hat {tuple(d_hat.shape)}"
    )
    assert points.shape[:1] == (batch,) and points.shape[-1] == 3 and points.ndim == 4
    assert t.shape == points.shape[:3], f"t {tuple(t.shape)}, points {tuple(points.shape)}"
    assert volume_depth >= 2, f"volume_depth {volume_depth} < 2"
