"""The fused Triton lifting kernels (models.lifting_triton) equal the fast and reference paths.

CPU only: Triton's interpreter runs the kernels. It must be chosen (TRITON_INTERPRET=1) before
the process first imports triton, and the choice holds for the process, so each `check_*`
runs in a fresh Python with the variable set (`_in_interpreter`; about 3 s to start), or right
here when pytest itself was started with TRITON_INTERPRET=1. The interpreter runs a kernel's
programs one after another in Python (about 8 ms per sample and corner of a ray on this
machine), hence the 4 rays per batch element: a render and its gradients take a few seconds.
"""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models.camera import CameraPrior, intrinsics, look_at_origin, pixel_rays
from models.lifting import LiftingConfig, render_lifted, render_lifted_fast, render_lifted_reference
from models.lifting_triton import CHANNEL_BLOCK, SAMPLE_BLOCK, _kernels
from models.rendering import ray_depths, ray_points
from models.ssgan3d import SSGAN3DConfig

B, K, C, D, H, W, N = 2, 3, 4, 8, 8, 8, 6  # 4 rays per batch element (`_scene`)
OUTPUTS = ("feature", "mask_logits", "weights", "depth")
MAPS = ("f2d", "sigma2d", "d_hat")
# max |triton - fast| / max |fast| per output and input gradient. float32: the summation order
# (runs of samples, atomic adds) and psi taken at the corners rather than at the grid nodes
# change the last bits (measured: below 5e-7). float64: the same formulas.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
# against the reference path: the tolerances at which tests/test_lifting.py holds fast == it
REFERENCE_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"  # pytest itself runs the interpreter


def _in_interpreter(check: Callable[..., None], *args: object) -> None:
    """Run check(*args), a function of this module, under Triton's interpreter."""
    if INTERPRETING:
        check(*args)
        return
    here = Path(__file__).resolve()
    code = (f"import sys, torch; torch.set_num_threads(1); "
            f"sys.path[:0] = [{str(here.parents[1])!r}, {str(here.parent)!r}]; "
            f"import {here.stem} as tests; tests.{check.__name__}(*{args!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


def _scene(dtype: torch.dtype, seed: int = 0, device: str = "cpu") -> dict:
    """Part maps and 4 rays of N samples per batch element on `device`: a camera ray, random
    points (many outside the box), points on the box's faces and edges or just outside, and
    the frontal central ray (every sample on the same 4 pixels: one run per corner in the
    kernels)."""
    generator = torch.Generator().manual_seed(seed)
    angles = CameraPrior().sample(B, generator)
    origins, directions = pixel_rays(look_at_origin(angles), intrinsics(40.0), 2)  # (B, 4, 3)
    t = ray_depths(B, 4, N, stratified=True, generator=generator)  # (B, 4, N)
    points = ray_points(origins, directions, t)  # (B, 4, N, 3)
    points[:, 1] = torch.rand(B, N, 3, generator=generator) * 2.8 - 1.4
    points[:, 2] = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0 + 1e-7, 0.3, -0.2],
                                 [-1.0 - 1e-7, 0.5, 0.99], [0.2, -1.0000001, 1.0000001],
                                 [1.05, -1.05, 0.0]])
    points[:, 3, :, :2] = torch.tensor([0.1, -0.2])
    points[:, 3, :, 2] = torch.linspace(0.9, -0.9, N)
    maps = {
        "f2d": torch.randn(B, K, C, H, W, generator=generator),
        "sigma2d": torch.rand(B, K, H, W, generator=generator) * 3,
        "d_hat": torch.rand(B, K, H, W, generator=generator) * (D + 1) - 1,  # [-1, D]
        "points": points,
        "t": t,
    }
    return {"volume_depth": D,
            **{name: value.to(device, dtype).requires_grad_() for name, value in maps.items()}}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (the plain error where expected is zero)."""
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    return error / scale if scale else error


def _gradients(render: object, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Gradients of a random linear functional of the outputs with respect to `inputs`."""
    outputs = [getattr(render, name) for name in OUTPUTS]
    generator = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                  for x in outputs]
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)


# (psi, Eq. 10's weights, fusion, variant, dtype): every option of the kernels at least once
CASES = [
    ("gaussian", "nerf", "sum", "", "float32"),
    # quantile-depth weights given; f2d stored channels last (read without a copy), no grad
    ("inverse_abs", "uniform", "sum", "weights, channels last", "float32"),
    ("inverse_square", "nerf", "density", "", "float32"),
    ("gaussian", "uniform", "density", "weights", "float64"),
]


@pytest.mark.parametrize("function, mask_weights, fusion, variant, dtype", CASES)
def test_triton_path_equals_fast_and_reference_paths(
    function: str, mask_weights: str, fusion: str, variant: str, dtype: str
) -> None:
    _in_interpreter(check_paths_agree, function, mask_weights, fusion, variant, dtype)


def check_paths_agree(function: str, mask_weights: str, fusion: str, variant: str,
                      dtype: str, device: str = "cpu") -> None:
    """Outputs, and gradients with respect to every input, of the three paths agree (on
    `device`: the interpreter on CPU, the compiled kernels on CUDA, tests/test_cuda.py)."""
    scene = _scene(getattr(torch, dtype), device=device)
    names = [*MAPS, "points", "t"]
    if "weights" in variant:
        weights = torch.rand(B, 4, N, dtype=scene["t"].dtype)
        scene["weights"] = weights.to(device).requires_grad_()
        names.append("weights")
    if "channels last" in variant:  # a (B, K, C, H, W) view of (B, K, H, W, C) memory
        scene["f2d"] = scene["f2d"].detach().permute(0, 1, 3, 4, 2).contiguous().permute(
            0, 1, 4, 2, 3)
        names.remove("f2d")
    kwargs = {"lifting": LiftingConfig(function=function, alpha=1.5),
              "mask_weights": mask_weights, "fusion": fusion}
    renders = {"triton": render_lifted(**scene, path="triton", **kwargs),
               "fast": render_lifted_fast(**scene, **kwargs),
               "reference": render_lifted_reference(**scene, **kwargs)}
    tolerance = {"fast": TOLERANCE[dtype], "reference": REFERENCE_TOLERANCE[dtype]}
    for name in OUTPUTS:
        assert getattr(renders["triton"], name).dtype == scene["t"].dtype
        for label in ("fast", "reference"):
            error = _relative_error(getattr(renders["triton"], name),
                                    getattr(renders[label], name))
            assert error <= tolerance[label], f"{name} vs {label}: {error:.1e}"
    if "weights" in variant:
        assert torch.equal(renders["triton"].weights, scene["weights"])
    inputs = [scene[name] for name in names]
    grads = {label: _gradients(render, inputs) for label, render in renders.items()}
    for i, name in enumerate(names):
        error = _relative_error(grads["triton"][i], grads["fast"][i])
        assert error <= tolerance["fast"], f"d/d {name} vs fast: {error:.1e}"
        if name in MAPS:  # (grid_sample's derivative in the points differs at cell faces)
            error = _relative_error(grads["triton"][i], grads["reference"][i])
            assert error <= tolerance["reference"], f"d/d {name} vs reference: {error:.1e}"


def test_triton_path_second_order_gradients_are_the_fast_paths() -> None:
    _in_interpreter(check_second_order)


def check_second_order() -> None:
    """With create_graph the backward pass differentiates the fast path: double backward (as
    path-length regularisation needs it) matches, in float64."""
    scene = _scene(torch.float64, seed=2)
    inputs = [scene[name] for name in MAPS]
    generator = torch.Generator().manual_seed(2)
    directions = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in inputs]
    results = {}
    for path in ("fast", "triton"):
        render = render_lifted(**scene, lifting=LiftingConfig(function="inverse_square"),
                               path=path)
        loss = sum(getattr(render, name).square().sum() for name in OUTPUTS)
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        results[path] = [*first, *torch.autograd.grad(first, inputs, directions)]
    for triton, fast in zip(results["triton"], results["fast"], strict=True):
        assert _relative_error(triton, fast) <= 1e-12


def test_opaque_part_renders_its_feature_on_the_frontal_central_ray() -> None:
    _in_interpreter(check_opaque_part)


def check_opaque_part() -> None:
    """A known value (as tests/test_lifting.py): samples on the depth nodes of the z axis and an
    opaque part at z = 0.25 render its feature, its depth and its density as mask logit."""
    depth_nodes, part_depth = 9, 5
    feature = torch.tensor([1.0, -2.0, 3.0, 0.5])
    f2d = torch.zeros(1, 2, 4, H, W)
    f2d[0, 0] = feature[:, None, None]
    f2d[0, 1] = torch.randn(4, H, W)
    sigma2d = torch.zeros(1, 2, H, W)
    sigma2d[0, 0] = 100.0
    d_hat = torch.tensor([float(part_depth), 0.0]).view(1, 2, 1, 1).expand(1, 2, H, W)
    z = torch.linspace(1.0, -1.0, depth_nodes)
    origin = look_at_origin(torch.tensor([[math.pi / 2, math.pi / 2]]))
    t = (origin[0, 2, 3] - z).view(1, 1, -1)  # (1, 1, N) the camera sits at z = 4
    points = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], dim=-1).view(1, 1, -1, 3)
    render = render_lifted(f2d, sigma2d, d_hat, depth_nodes, points, t,
                           lifting=LiftingConfig(alpha=20.0), path="triton")
    torch.testing.assert_close(render.feature[0, 0], feature, rtol=0, atol=1e-5)
    torch.testing.assert_close(render.depth[0, 0].item(), 4.0 - 0.25, rtol=0, atol=1e-5)
    torch.testing.assert_close(render.mask_logits[0, 0], torch.tensor([100.0, 0.0]), rtol=0,
                               atol=1e-3)


def test_triton_path_errors_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, no interpreter: the path refuses CPU tensors and a late variable."""
    scene = _scene(torch.float32)
    lifting = LiftingConfig()
    with pytest.raises(ValueError, match="fast lifting path only"):
        render_lifted(**scene, lifting=lifting, path="triton", ray_chunk=2)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA tensors .* use lifting path 'fast'"):
        render_lifted(**scene, lifting=lifting, path="triton")
    if not INTERPRETING:  # triton is imported now, without the interpreter
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        with pytest.raises(ValueError, match="before the process first imports triton"):
            render_lifted(**scene, lifting=lifting, path="triton")
    assert SSGAN3DConfig(lifting_path="triton").lifting_path == "triton"
    assert SSGAN3DConfig().lifting_path == "fast"  # not the default before a GPU measurement


@pytest.mark.skipif(INTERPRETING, reason="this process imported triton for its interpreter")
@pytest.mark.parametrize("kernel, constants", [
    ("densities_forward", {"PSI": 0, "BLOCK_S": SAMPLE_BLOCK, "BLOCK_K": 16}),
    ("densities_backward", {"PSI": 1, "BLOCK_S": SAMPLE_BLOCK, "BLOCK_K": 16}),
    ("features_forward", {"PSI": 2, "DENSITY": True, "BLOCK_K": 16, "BLOCK_C": CHANNEL_BLOCK}),
    ("features_backward", {"PSI": 0, "DENSITY": True, "GRAD_TABLE": True, "BLOCK_K": 16,
                           "BLOCK_C": CHANNEL_BLOCK}),
])
def test_kernels_compile_for_the_gpu_without_one(
    kernel: str, constants: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The interpreter forgives what the compiler does not: each kernel compiles to an sm_90
    (H100/H200) binary, float32, with Triton's own ptxas and no GPU."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    function = getattr(_kernels(), kernel)
    names = list(inspect.signature(function.fn).parameters)
    signature = {name: "constexpr" if name in constants else
                 "*fp32" if name.endswith("_ptr") else "i32" for name in names}
    source = ASTSource(function, signature,
                       {(names.index(name),): value for name, value in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"]
    if kernel.endswith("backward"):  # the scatter of the map gradients: atomic adds
        assert "red.global" in compiled.asm["ptx"] or "atom.global" in compiled.asm["ptx"]
