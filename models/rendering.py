"""NeRF-style volume rendering shared by every 3D model of the zoo (paper Sec. 3.1, Eqs. 2-4).

Small and general: depths along rays, sample points, NeRF weights, and weighted accumulation of
any per-sample values (features, colours, densities). How the values at the points come about
(an MLP, a tri-plane, 3D-SSGAN's lifted volumes in `models.lifting`) is the caller's business.
Geometry conventions (world box, NEAR/FAR, cameras) live in `models.camera`; depths t are
distances along unit-length ray directions, in head units.

Memory: every function here allocates O(B * rays * N) scalars (times C for `accumulate`).
"""

from __future__ import annotations

import torch

from models.camera import FAR, NEAR
from models.precision import float32

LAST_DELTA = 1e10  # head units: the last sample's interval is "infinite" (see `nerf_weights`)


def ray_depths(
    batch: int,
    num_rays: int,
    num_samples: int,
    near: float = NEAR,
    far: float = FAR,
    *,
    stratified: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(B, rays, N) increasing depths t along each ray, one in each of N equal bins of [near, far].

    Stratified (training): a uniform random position inside each bin, independently per ray.
    Otherwise (testing): the bin centres, identical for every ray.
    """
    width = (far - near) / num_samples  # head units, bin width
    starts = near + width * torch.arange(num_samples, device=device, dtype=dtype)  # (N,)
    if stratified:
        jitter = torch.rand(
            batch, num_rays, num_samples, generator=generator, device=device, dtype=dtype
        )  # (B, rays, N) in [0, 1)
    else:
        jitter = torch.full((batch, num_rays, num_samples), 0.5, device=device, dtype=dtype)
    return starts + width * jitter  # (B, rays, N)


def ray_points(origins: torch.Tensor, directions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, rays, N, 3) points X_i = o + t_i d; origins, directions (B, rays, 3), t (B, rays, N)."""
    return origins[..., None, :] + t[..., None] * directions[..., None, :]


@float32  # Eqs. 2-3's cumulative sum and exponentials (models.precision)
def nerf_weights(
    sigma: torch.Tensor, t: torch.Tensor, last_delta: float = LAST_DELTA
) -> torch.Tensor:
    """(B, rays, N) NeRF weights w_i = T_i (1 - exp(-sigma_i delta_i)) (Eqs. 2-3).

    sigma: (B, rays, N) non-negative densities at the samples; t: (B, rays, N) increasing depths.
    delta_i = t_{i+1} - t_i; the last sample's interval is `last_delta` (default 1e10, NeRF's
    convention): a last sample with any density absorbs all the remaining transmittance, so an
    opaque background behind everything makes the weights sum to one. The weights always sum
    to at most one; pass the bin width instead for a ray that may leave through the back.
    Stable: T_i is the exponential of an exclusive cumulative sum of sigma * delta, and
    1 - exp(-x) is computed by expm1.
    """
    delta = torch.cat(
        [t[..., 1:] - t[..., :-1], torch.full_like(t[..., :1], last_delta)], dim=-1
    )  # (B, rays, N)
    optical = sigma * delta  # (B, rays, N) sigma_i delta_i
    alpha = -torch.expm1(-optical)  # (B, rays, N) Eq. 2: 1 - exp(-sigma_i delta_i)
    # Eq. 3: sum over j < i only, so the (possibly huge) last term never enters a difference.
    before = torch.cat(
        [torch.zeros_like(optical[..., :1]), torch.cumsum(optical[..., :-1], dim=-1)], dim=-1
    )  # (B, rays, N)
    return torch.exp(-before) * alpha  # (B, rays, N) Eq. 2


@float32  # Eq. 4's weighted sums (models.precision)
def accumulate(w: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(B, rays, C) rendered values sum_i w_i v_i (Eq. 4); w (B, rays, N), values (B, rays, N, C).

    Memory: one (B, rays, C) output; no (B, rays, N, C) temporary.
    """
    return torch.einsum("brn,brnc->brc", w, values)


def expected_depth(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, rays) expected ray distance sum_i w_i t_i + (1 - sum_i w_i) t_N, in head units.

    The transmittance left at the end of the ray is placed at its last sample, so a ray that
    hits nothing reads as far away (t_N), never as zero; with an opaque last sample
    (the default `last_delta`) the second term vanishes.
    """
    return (w * t).sum(-1) + (1 - w.sum(-1)) * t[..., -1]


@float32  # a cumulative sum of weights (models.precision)
def quantile_depths(
    w: torch.Tensor, count: int, near: float = NEAR, far: float = FAR
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depths and weights of `count` samples at equal-mass quantiles of a ray's weight profile.

    w: (B, rays, N) NeRF weights of a pass with `ray_depths(..., stratified=False)` samples on
    [near, far]; each weight is taken as spread evenly over its sample's bin, so the profile's
    cumulative distribution is piecewise linear in depth. Sample j sits where that distribution
    reaches (j + 1/2) / count of the ray's total weight and carries total / count, so that
    sum_j w_j v(t_j) is the midpoint rule of sum_i w_i v(t_i) on equal-mass bins (depth-guided
    sampling: few samples, all where the weight is). Returns t (B, rays, count), increasing,
    and w (B, rays, count). Memory O(B * rays * (N + count)).
    """
    samples = w.shape[-1]
    cdf = torch.cat([torch.zeros_like(w[..., :1]), torch.cumsum(w, -1)], -1)  # (B, rays, N+1)
    total = cdf[..., -1:]  # (B, rays, 1)
    fraction = (torch.arange(count, device=w.device, dtype=w.dtype) + 0.5) / count  # (count,)
    target = (total * fraction).contiguous()  # (B, rays, count) cumulative weight to reach
    # The bin i whose edges bracket the target: cdf[i] <= target < cdf[i+1].
    bin_index = (torch.searchsorted(cdf.contiguous(), target, right=True) - 1).clamp(0, samples - 1)
    below, above = cdf.gather(-1, bin_index), cdf.gather(-1, bin_index + 1)  # (B, rays, count)
    inside = (target - below) / (above - below).clamp_min(torch.finfo(w.dtype).tiny)
    width = (far - near) / samples  # head units, bin width of the pass
    t = near + width * (bin_index + inside.clamp(0, 1))  # (B, rays, count)
    return t, (total / count).expand_as(t)


def render_map(w: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, size, size) map of rendered values (Eq. 4) for size*size row-major pixel rays.

    w (B, rays, N) NeRF weights; values (B, rays * N, C) at the samples, ray by ray (the
    layout of `ray_points(...).reshape(B, -1, 3)`).
    """
    batch, rays, samples = w.shape
    rendered = accumulate(w, values.view(batch, rays, samples, -1))  # (B, rays, C)
    return rendered.transpose(1, 2).reshape(batch, -1, size, size)
