"""Renderer benchmark: 3D-SSGAN's fast lifted-volume renderer against the reference path.

At the paper's shapes (K=13 parts, C=256, 64x64x32 volumes, 64x64 rays; 12 samples per ray in
training, 36 at test time; batch 1 and 4), forward + backward: time ratio and peak-memory
ratio (reference / fast), for the fast path on all rays at once and in ray chunks (the
`ray_chunk` setting: less memory for one more forward pass of the per-sample terms), and the
fast path's floating-point throughput as a fraction of this machine's dense matrix multiply,
measured in the same run.

With `triton` (on CUDA by default) also the fused Triton path (`model.lifting_path=triton`):
its time against the fast path, and the bandwidth it achieves on its compulsory traffic
(`RendererShape.compulsory_bytes`) as a fraction of this device's copy bandwidth, measured in
the same run (`measure.copy_bytes_per_second`). On CPU the Triton path runs only in Triton's
interpreter (TRITON_INTERPRET=1), which times the interpreter, not the kernels: tests only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.bench.measure import (
    GIB,
    copy_bytes_per_second,
    interleaved_medians,
    matmul_flops_per_second,
    peak_memory_bytes,
)
from models.camera import intrinsics, look_at_origin, pixel_rays
from models.lifting import LiftingConfig, render_lifted
from models.rendering import ray_depths, ray_points


@dataclass(frozen=True)
class RendererShape:
    """Shapes of one renderer case (paper defaults)."""

    batch: int = 1
    samples: int = 12  # N per ray
    parts: int = 13  # K
    channels: int = 256  # C
    depth: int = 32  # D
    size: int = 64  # H = W, and rays per side

    @property
    def entries(self) -> int:
        """Non-zeros of the fast path's sparse (rays x K*H*W) matrix: B * rays * N * 4 * K."""
        return self.batch * self.size**2 * self.samples * 4 * self.parts

    def fast_flops(self) -> float:
        """Minimal floating-point operations of the fast path's forward + backward.

        The rendered feature is sum over (sample, xy-corner, part) of a coefficient times a
        C-vector of the 2D feature map (trilinear sampling of psi_k f_k^2d with its z-corners
        folded into the coefficient, Eqs. 4-8): E*C multiply-adds for E = B*rays*N*4*K
        entries. The backward pass needs the same count twice (the gradient of the feature
        table, S^T G, and of the coefficients, <G[row], F[col]>). Lower-order terms (E
        coefficients, densities, weights) are left out, so this undercounts slightly.
        """
        return 2.0 * 3 * self.entries * self.channels

    def compulsory_bytes(self, element_bytes: int = 4) -> float:
        """Bytes a forward + backward render must move at the least (float32: 4 per element).

        Forward reads the 2D maps once, f2d (K*C per pixel), sigma2d and d_hat (K each), and
        writes the outputs once, per ray the feature (C), mask logits (K), NeRF weights (N) and
        depth (1); backward reads the outputs' gradients once and writes the maps' gradients
        once: 2 * s * B * (K*H*W*(C + 2) + rays*(C + K + N + 1)). The ray points and depths,
        re-reads of the maps and the backward's recomputation are left out, so this over a
        measured time is a lower bound of the bandwidth a path achieves.
        """
        maps = self.parts * self.size**2 * (self.channels + 2)
        outputs = self.size**2 * (self.channels + self.parts + self.samples + 1)
        return 2.0 * element_bytes * self.batch * (maps + outputs)

    def reference_bytes_estimate(self) -> float:
        """The reference path's peak bytes from its docstring formula (float32)."""
        k, c, d, hw = self.parts, self.channels, self.depth, self.size**2
        rays_terms = 3 * hw * self.samples * (c + k)
        return 4.0 * self.batch * (2 * k * c * d * hw + 2 * c * d * hw + 3 * k * d * hw
                                   + rays_terms)


def renderer_inputs(shape: RendererShape, seed: int = 0, device: str = "cpu",
                    channels_last: bool = True) -> dict[str, Any]:
    """`render_lifted`'s inputs at `shape` along frontal rays: f2d, sigma2d and d_hat
    requiring grad, volume_depth, points, t (stratified). f2d (B, K, C, H, W) is stored
    channels last, as 3D-SSGAN's local generators make it for the fast and Triton paths (which
    then read it without a copy), or contiguous (`channels_last=False`, the reference path's)."""
    gen = torch.Generator().manual_seed(seed)
    b, k, c, s = shape.batch, shape.parts, shape.channels, shape.size
    f2d = torch.randn(b, k, s, s, c, generator=gen).to(device).permute(0, 1, 4, 2, 3)
    if not channels_last:
        f2d = f2d.contiguous()
    f2d.requires_grad_(True)
    sigma2d = torch.rand(b, k, s, s, generator=gen).to(device).requires_grad_(True)
    d_hat = ((shape.depth - 1) * torch.rand(b, k, s, s, generator=gen)).to(device)
    d_hat.requires_grad_(True)
    angles = torch.tensor([[math.pi / 2, math.pi / 2]]).expand(b, 2)
    origins, directions = pixel_rays(look_at_origin(angles).to(device),
                                     intrinsics().expand(b, 3, 3).to(device), s)
    t = ray_depths(b, s * s, shape.samples, stratified=True, generator=gen).to(device)
    return {"f2d": f2d, "sigma2d": sigma2d, "d_hat": d_hat, "volume_depth": shape.depth,
            "points": ray_points(origins, directions, t), "t": t}


def renderer_case(path: str, shape: RendererShape, seed: int = 0, device: str = "cpu",
                  ray_chunk: int | None = None) -> Callable[[], Any]:
    """Inputs at `shape` (`renderer_inputs`, in `path`'s layout) and a call rendering them
    along frontal rays with `path`, forward + backward."""
    inputs = renderer_inputs(shape, seed, device, channels_last=path != "reference")
    lifting = LiftingConfig()

    def run() -> None:
        out = render_lifted(**inputs, lifting=lifting, path=path, ray_chunk=ray_chunk)
        (out.feature.square().mean() + out.mask_logits.mean() + out.depth.mean()).backward()
        for name in ("f2d", "sigma2d", "d_hat"):
            inputs[name].grad = None

    return run


def bench_renderer(device: torch.device, repeats: int = 3,
                   batches: tuple[int, ...] = (1, 4), samples: tuple[int, ...] = (12, 36),
                   max_memory_gb: float = 12.0, ray_chunk: int = 512, triton: bool = False,
                   base: RendererShape = RendererShape()) -> dict[str, Any]:
    """Time and memory per shape (`base` at each batch and sample count) of the reference
    path, the fast path, the fast path rendering `ray_chunk` rays at a time (recomputed in
    backward) and, with `triton`, the Triton path; the reference is skipped where its
    estimated peak exceeds `max_memory_gb` (the row says so)."""
    matmul = matmul_flops_per_second(device)
    copy = copy_bytes_per_second(device) if triton else math.nan
    rows = []
    for batch in batches:
        for n in samples:
            shape = dataclasses.replace(base, batch=batch, samples=n)
            estimate = shape.reference_bytes_estimate() / GIB
            cases = {"fast": dict(path="fast"), "chunked": dict(path="fast", ray_chunk=ray_chunk)}
            if estimate <= max_memory_gb:
                cases["reference"] = dict(path="reference")
            if triton:
                cases["triton"] = dict(path="triton")
            seconds = interleaved_medians(
                {name: renderer_case(shape=shape, device=str(device), **case)
                 for name, case in cases.items()}, repeats, device)
            gib = {name: peak_memory_bytes(renderer_case, device, shape=shape, **case) / GIB
                   for name, case in cases.items()}
            row: dict[str, Any] = {
                "batch": batch, "samples": n, "fast_s": seconds["fast"], "fast_gib": gib["fast"],
                "chunked_s": seconds["chunked"], "chunked_gib": gib["chunked"],
                "matmul_fraction": shape.fast_flops() / seconds["fast"] / matmul,
                "reference_estimate_gib": estimate,
            }
            if "reference" in cases:
                row.update(reference_s=seconds["reference"], reference_gib=gib["reference"])
                for fast, suffix in (("fast", ""), ("chunked", "_chunked")):
                    row["time_ratio" + suffix] = seconds["reference"] / seconds[fast]
                    row["memory_ratio" + suffix] = gib["reference"] / gib[fast]
            if triton:
                achieved = shape.compulsory_bytes() / seconds["triton"]  # bytes/s, lower bound
                row.update(triton_s=seconds["triton"], triton_gib=gib["triton"],
                           triton_speedup=seconds["fast"] / seconds["triton"],
                           triton_gbps=achieved / 1e9, triton_bandwidth_fraction=achieved / copy)
            rows.append(row)
    measured = [row for row in rows if "time_ratio" in row]

    def worst(key: str, over: list[dict[str, Any]]) -> float:
        return min((r[key] for r in over), default=float("nan"))

    figures = {
        "rows": rows,
        "matmul_gflops": matmul / 1e9,
        "ray_chunk": ray_chunk,
        # headline figures: the worst case over the shapes where both paths ran
        "time_ratio": worst("time_ratio", measured),
        "memory_ratio": worst("memory_ratio", measured),
        "time_ratio_chunked": worst("time_ratio_chunked", measured),
        "memory_ratio_chunked": worst("memory_ratio_chunked", measured),
        "matmul_fraction": min(r["matmul_fraction"] for r in rows),
    }
    if triton:
        figures.update(copy_gbps=copy / 1e9, triton_speedup=worst("triton_speedup", rows),
                       triton_bandwidth_fraction=worst("triton_bandwidth_fraction", rows))
    return figures
