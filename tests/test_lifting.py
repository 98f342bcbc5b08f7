"""Depth-guided lifting (Eqs. 5-8) and its renderers (Eqs. 4, 9-11): fast path == reference."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from models.camera import CameraPrior, intrinsics, look_at_origin, pixel_rays
from models.lifting import (
    PSI_FUNCTIONS,
    LiftingConfig,
    render_lifted,
    render_lifted_fast,
    render_lifted_reference,
)
from models.rendering import FAR, NEAR, ray_depths, ray_points

B, K, C, D, H, W, RES, N = 2, 3, 4, 8, 8, 8, 4, 6  # RES * RES = 16 rays
OUTPUTS = ("feature", "mask_logits", "weights", "depth")


def _scene(dtype: torch.dtype, channels: int = C, size: int = H, seed: int = 0,
           device: str = "cpu") -> dict:
    """Random part maps and ray points from the camera prior, some points outside the box."""
    generator = torch.Generator().manual_seed(seed)
    angles = CameraPrior().sample(B, generator)
    # A wide field of view so that the image corners leave the box through its sides.
    origins, directions = pixel_rays(look_at_origin(angles), intrinsics(40.0), RES)
    t = ray_depths(B, RES * RES, N, stratified=True, generator=generator)  # (B, rays, N)
    points = ray_points(origins, directions, t)  # (B, rays, N, 3)
    points[:, 0] = torch.rand(B, N, 3, generator=generator) * 2.8 - 1.4  # many outside
    points[:, 1] = torch.tensor(  # on the faces, edges and corners, or just outside them
        [
            [1.0, 1.0, 1.0],
            [-1.0, -1.0, -1.0],
            [1.0 + 1e-7, 0.3, -0.2],
            [-1.0 - 1e-7, 0.5, 0.99],
            [0.2, -1.0000001, 1.0000001],
            [1.05, -1.05, 0.0],
        ]
    )
    maps = {
        "f2d": torch.randn(B, K, channels, size, size, generator=generator),
        "sigma2d": torch.rand(B, K, size, size, generator=generator) * 3,
        "d_hat": torch.rand(B, K, size, size, generator=generator) * (D + 1) - 1,  # [-1, D]
    }
    maps = {name: value.to(device, dtype).requires_grad_() for name, value in maps.items()}
    return {**maps, "volume_depth": D, "points": points.to(device, dtype),
            "t": t.to(device, dtype)}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="'gaussian', 'inverse_abs' or 'inverse_square'"):
        LiftingConfig(function="cauchy")
    with pytest.raises(ValueError, match="greater than 0"):
        LiftingConfig(alpha=0.0)
    scene = _scene(torch.float32)
    with pytest.raises(ValueError, match="nerf, uniform"):
        render_lifted(**scene, lifting=LiftingConfig(), mask_weights="ones")
    with pytest.raises(ValueError, match="fast, reference"):
        render_lifted(**scene, lifting=LiftingConfig(), path="dense")
    with pytest.raises(ValueError, match="sum, density"):
        render_lifted(**scene, lifting=LiftingConfig(), fusion="max")


def test_psi_functions_match_their_formulas_at_hand_computed_points() -> None:
    diff = torch.tensor([0.0, 0.5, -1.5, 3.0], dtype=torch.float64)  # d_hat - z, index units
    expected = {
        "gaussian": [1.0, math.exp(-0.5), math.exp(-4.5), math.exp(-18.0)],  # exp(-2 x^2)
        "inverse_abs": [1.0, 1 / 2, 1 / 4, 1 / 7],  # 1 / (1 + 2 |x|)
        "inverse_square": [1.0, 2 / 3, 2 / 11, 1 / 19],  # 1 / (1 + 2 x^2)
    }
    assert set(expected) == set(PSI_FUNCTIONS)
    for function, values in expected.items():
        psi = LiftingConfig(function=function, alpha=2.0).psi(diff)
        torch.testing.assert_close(
            psi, torch.tensor(values, dtype=torch.float64), rtol=1e-15, atol=0
        )


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("mask_weights, fusion", [("nerf", "sum"), ("uniform", "sum"),
                                                  ("nerf", "density")])
@pytest.mark.parametrize("function", sorted(PSI_FUNCTIONS))
def test_fast_path_equals_reference_forward_and_gradients(
    function: str, mask_weights: str, fusion: str, dtype: torch.dtype, tolerance: float
) -> None:
    assert_fast_path_equals_reference(_scene(dtype), function, mask_weights, fusion, tolerance)


def assert_fast_path_equals_reference(scene: dict, function: str, mask_weights: str,
                                      fusion: str, tolerance: float) -> None:
    """The fast and the reference renders of `scene` agree, outputs and input gradients."""
    lifting = LiftingConfig(function=function, alpha=1.5)
    fast = render_lifted_fast(**scene, lifting=lifting, mask_weights=mask_weights, fusion=fusion)
    reference = render_lifted_reference(**scene, lifting=lifting, mask_weights=mask_weights,
                                        fusion=fusion)
    generator = torch.Generator().manual_seed(1)
    cotangents = [
        torch.randn(getattr(reference, name).shape, generator=generator,
                    dtype=reference.feature.dtype).to(reference.feature.device)
        for name in OUTPUTS
    ]
    inputs = [scene["f2d"], scene["sigma2d"], scene["d_hat"]]
    gradients = {}
    for label, render in (("fast", fast), ("reference", reference)):
        outputs = [getattr(render, name) for name in OUTPUTS]
        gradients[label] = torch.autograd.grad(outputs, inputs, cotangents)
    for name in OUTPUTS:
        error = _relative_error(getattr(fast, name), getattr(reference, name))
        assert error <= tolerance, f"{name}: {error:.2e}"
    for name, grad_fast, grad_reference in zip(
        ("f2d", "sigma2d", "d_hat"), gradients["fast"], gradients["reference"], strict=True
    ):
        error = _relative_error(grad_fast, grad_reference)
        assert error <= tolerance, f"d/d {name}: {error:.2e}"
    assert fast.weights.sum(-1).max() <= 1 + tolerance
    assert (reference.feature.abs().sum(-1)[:, 2:] > 0).all(), "rays in the box render something"


@pytest.mark.parametrize("function", sorted(PSI_FUNCTIONS))
def test_fast_path_equals_reference_in_second_order_gradients(function: str) -> None:
    """Double backward, as path-length regularisation needs it, matches in float64."""
    scene = _scene(torch.float64)
    inputs = [scene["f2d"], scene["sigma2d"], scene["d_hat"]]
    generator = torch.Generator().manual_seed(2)
    directions = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in inputs]
    second = {}
    for path in ("fast", "reference"):
        lifting = LiftingConfig(function=function, alpha=1.5)
        render = render_lifted(**scene, lifting=lifting, path=path)
        loss = sum(getattr(render, name).square().sum() for name in OUTPUTS)
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        second[path] = torch.autograd.grad(first, inputs, directions)
    for name, fast, reference in zip(
        ("f2d", "sigma2d", "d_hat"), second["fast"], second["reference"], strict=True
    ):
        error = _relative_error(fast, reference)
        assert error <= 1e-9, f"d2/d {name}: {error:.2e}"


def test_ray_chunks_render_the_same_to_second_order() -> None:
    """ray_chunk (5, not dividing the 16 rays) recomputes chunks in backward: same numbers."""
    scene = _scene(torch.float64)
    inputs = [scene["f2d"], scene["sigma2d"], scene["d_hat"]]
    generator = torch.Generator().manual_seed(3)
    directions = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in inputs]
    results = {}
    for chunk in (None, 5):
        render = render_lifted(**scene, lifting=LiftingConfig(), ray_chunk=chunk)
        loss = sum(getattr(render, name).square().sum() for name in OUTPUTS)
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        second = torch.autograd.grad(first, inputs, directions)
        results[chunk] = [getattr(render, name) for name in OUTPUTS] + list(first) + list(second)
    for whole, chunked in zip(results[None], results[5], strict=True):
        assert _relative_error(chunked, whole) <= 1e-12
    with pytest.raises(ValueError, match="fast lifting path only"):
        render_lifted(**scene, lifting=LiftingConfig(), path="reference", ray_chunk=5)


def test_ray_chunks_keep_less_for_the_backward_pass() -> None:
    """What autograd keeps between forward and backward (distinct storages) shrinks with the
    chunk: 128 rays in chunks of 16 keep less than half of the whole-ray path's bytes."""
    scene = _scene(torch.float32)
    scene["points"] = scene["points"].repeat(1, 8, 1, 1)  # 128 rays: the per-sample terms
    scene["t"] = scene["t"].repeat(1, 8, 1)  # outweigh the node tables, as at paper scale

    def kept_bytes(chunk: int | None) -> int:
        kept: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            render_lifted(**scene, lifting=LiftingConfig(), ray_chunk=chunk)
        return sum(kept.values())

    assert kept_bytes(16) < 0.5 * kept_bytes(None)


def test_uniform_mask_weights_keep_each_part_mask_independent_of_the_others() -> None:
    scene = _scene(torch.float64)
    edited = {**scene, "sigma2d": scene["sigma2d"].detach().clone()}
    edited["sigma2d"][:, 0] *= 5  # denser part 0 occludes the others under NeRF weights
    lifting = LiftingConfig()
    for mask_weights, others_change in (("uniform", False), ("nerf", True)):
        before = render_lifted(**scene, lifting=lifting, mask_weights=mask_weights)
        after = render_lifted(**edited, lifting=lifting, mask_weights=mask_weights)
        changed = not torch.allclose(before.mask_logits[..., 1:], after.mask_logits[..., 1:])
        assert changed == others_change, mask_weights


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_opaque_part_renders_its_feature_and_depth_on_the_frontal_central_ray(path: str) -> None:
    """Samples on the grid's depth nodes along the frontal camera's central ray (z axis)."""
    depth_nodes, part_depth = 9, 5  # z of depth index d is -1 + 2 d / 8; part at z = 0.25
    feature = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    f2d = torch.zeros(1, 2, 4, H, W, dtype=torch.float64)
    f2d[0, 0] = feature[:, None, None]
    f2d[0, 1] = torch.randn(4, H, W, dtype=torch.float64)  # part 1: empty, far behind
    sigma2d = torch.zeros(1, 2, H, W, dtype=torch.float64)
    sigma2d[0, 0] = 100.0
    d_hat = torch.tensor([float(part_depth), 0.0], dtype=torch.float64).view(1, 2, 1, 1)
    d_hat = d_hat.expand(1, 2, H, W)
    z = torch.linspace(1.0, -1.0, depth_nodes, dtype=torch.float64)  # front to back
    origin = look_at_origin(torch.tensor([[math.pi / 2, math.pi / 2]], dtype=torch.float64))
    t = (origin[0, 2, 3] - z).view(1, 1, -1)  # (1, 1, N) the camera sits at z = 4
    points = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], dim=-1).view(1, 1, -1, 3)
    render = render_lifted(
        f2d, sigma2d, d_hat, depth_nodes, points, t, lifting=LiftingConfig(alpha=20.0), path=path
    )
    torch.testing.assert_close(render.feature[0, 0], feature, rtol=0, atol=1e-6)
    torch.testing.assert_close(render.depth[0, 0].item(), 4.0 - 0.25, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        render.mask_logits[0, 0], torch.tensor([100.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_opaque_quadrant_appears_where_and_as_deep_as_expected(path: str) -> None:
    """The top-left quadrant of a part map, as a plane at z = 0.5, seen by the frontal camera."""
    size, res, depth_nodes, samples = 16, 8, 33, 64
    sigma2d = torch.zeros(1, 1, size, size)
    sigma2d[..., : size // 2, : size // 2] = 200.0  # rows: y > 0 (top), columns: x < 0 (left)
    d_hat = torch.full((1, 1, size, size), 24.0)  # index 24 of 0..32: z = 0.5
    f2d = torch.ones(1, 1, 2, size, size)
    cam2world = look_at_origin(torch.tensor([[math.pi / 2, math.pi / 2]]))
    origins, directions = pixel_rays(cam2world, intrinsics(), res)  # (1, 64, 3) row-major
    t = ray_depths(1, res * res, samples, stratified=False)
    render = render_lifted(
        f2d,
        sigma2d,
        d_hat,
        depth_nodes,
        ray_points(origins, directions, t),
        t,
        lifting=LiftingConfig(alpha=4.0),
        path=path,
    )
    opacity = render.weights.sum(-1).view(res, res)  # (rows, columns) of the image
    quadrant = torch.zeros(res, res, dtype=torch.bool)
    quadrant[: res // 2, : res // 2] = True
    assert (opacity[quadrant] > 0.99).all() and (opacity[~quadrant] < 1e-6).all()
    hit = (4.0 - 0.5) / -directions[0, :, 2]  # (64,) ray distance to the plane z = 0.5
    tolerance = 2 / (depth_nodes - 1) + (FAR - NEAR) / samples  # a voxel and a bin
    error = (render.depth[0] - hit).abs().view(res, res)[quadrant]
    assert error.max() < tolerance, error.max()


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        out = func(*args, **(kwargs or {}))
        sizes = [x.numel() for x in tree_leaves(out) if isinstance(x, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def test_fast_path_never_allocates_a_volume_or_per_sample_features() -> None:
    """Forward, backward and double backward."""
    channels, size = 32, 4  # C large enough that every forbidden size exceeds all allowed ones
    scene = _scene(torch.float32, channels=channels, size=size)
    rays = RES * RES
    forbidden = min(
        K * channels * D * size * size,  # a part's feature volume
        B * rays * N * K * channels,  # per-part features at the samples
        B * rays * N * channels,  # fused features at the samples
    )
    inputs = [scene["f2d"], scene["sigma2d"], scene["d_hat"]]
    largest = {}
    for path in ("fast", "reference"):
        with _LargestTensor() as mode:
            render = render_lifted(**scene, lifting=LiftingConfig(), path=path)
            loss = sum(getattr(render, name).square().sum() for name in OUTPUTS)
            first = torch.autograd.grad(loss, inputs, create_graph=True)
            torch.autograd.grad(sum(g.square().sum() for g in first), inputs)
        largest[path] = mode.largest
    assert largest["reference"] >= K * channels * D * size * size  # the probe sees volumes
    assert largest["fast"] < forbidden, largest


def test_uniform_mask_weights_average_so_train_and_test_sample_counts_agree() -> None:
    """Eq. 10 with uniform weights is the mean of the sampled densities (w_i = 1/N): 12 training
    samples and 36 test samples per ray give about the same mask logits (literal ones: 3x)."""
    scene = _scene(torch.float64)
    angles = CameraPrior().sample(B, torch.Generator().manual_seed(1))
    origins, directions = pixel_rays(look_at_origin(angles), intrinsics(20.0), RES)
    logits = {}
    for samples in (12, 36):
        t = ray_depths(B, RES * RES, samples, stratified=False, dtype=torch.float64)
        points = ray_points(origins.double(), directions.double(), t)
        out = render_lifted(**{**scene, "points": points, "t": t}, lifting=LiftingConfig(),
                            mask_weights="uniform")
        logits[samples] = out.mask_logits
    ratio = (logits[36].abs().mean() / logits[12].abs().mean()).item()
    assert 0.9 < ratio < 1.1, ratio
    torch.testing.assert_close(logits[36], logits[12], rtol=0.25, atol=0.05)
