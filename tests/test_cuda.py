"""The GPU paths: resume, the fast lifting path against the reference, the compiled Triton
path against the fast path, the renderer's memory, the speed switches (bf16, compile,
channels-last) against the default step.

Skipped without CUDA (CI has no GPU); run them on a GPU machine with `pytest tests/test_cuda.py`
(.ci/gpu_check runs them with the benchmarks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_lifting import _scene, assert_fast_path_equals_reference
from test_lifting_triton import CASES, _gradients, _relative_error, check_paths_agree
from test_speed import BF16_RTOL, COMPILE, assert_losses_close, step_losses
from test_training import train_interrupted_and_uninterrupted

from harness.bench.measure import peak_memory_bytes
from harness.bench.renderer import RendererShape, renderer_case, renderer_inputs
from models.lifting import PSI_FUNCTIONS, LiftingConfig, render_lifted

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
# Triton against the fast path at the paper's shapes, max |difference| / max |fast| per output
# and map gradient: at 4 rays a pixel the kernels agree to 5e-7 (tests/test_lifting_triton.py);
# here a map gradient sums 4 * 36 terms of each of 4096 rays, in another order (atomic adds)
PAPER_TRITON_TOLERANCE = 1e-4
# A speed switch against the default step on CUDA, relative per loss: cuDNN convolutions run
# in TF32 (10-bit mantissa, PyTorch's default for them on Ampere and later) and NHWC or
# compiled graphs pick other kernels, and the default step is itself not bit-reproducible
# (atomic adds), so the two differ by TF32 rounding, not float32's
CUDA_SWITCH_RTOL = 1e-2


def test_a_cuda_run_resumes_where_it_stopped(tmp_path: Path, smoke_overrides) -> None:
    resumed, uninterrupted = train_interrupted_and_uninterrupted(
        tmp_path, [*smoke_overrides, "train.device=cuda"])
    # The same trajectory up to CUDA's non-deterministic kernels (atomic adds in backward):
    # differences of a few Adam steps (lr 0.002), where another seed differs by O(1).
    for a, b in zip(resumed.generator.parameters(), uninterrupted.generator.parameters(),
                    strict=True):
        assert (a - b).abs().max() < 0.05


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("function", sorted(PSI_FUNCTIONS))
def test_fast_lifting_equals_the_reference_on_cuda(function: str, dtype: torch.dtype,
                                                   tolerance: float) -> None:
    scene = _scene(dtype, device="cuda")
    assert_fast_path_equals_reference(scene, function, "nerf", "sum", tolerance)


def test_renderer_memory_is_measured_on_the_gpu() -> None:
    shape = RendererShape(batch=1, samples=12, parts=4, channels=32, depth=32, size=32)
    fast = peak_memory_bytes(renderer_case, CUDA, shape=shape, path="fast")
    reference = peak_memory_bytes(renderer_case, CUDA, shape=shape, path="reference")
    volumes = 4 * shape.parts * shape.channels * shape.depth * shape.size**2  # float32 bytes
    assert reference >= volumes > fast > 0


@pytest.mark.parametrize("function, mask_weights, fusion, variant, dtype", CASES)
def test_triton_path_equals_fast_and_reference_paths_on_cuda(
    function: str, mask_weights: str, fusion: str, variant: str, dtype: str
) -> None:
    check_paths_agree(function, mask_weights, fusion, variant, dtype, device="cuda")


def test_triton_path_equals_the_fast_path_at_the_papers_shape() -> None:
    inputs = renderer_inputs(RendererShape(batch=4, samples=36), device="cuda")  # K=13, C=256
    maps = [inputs[name] for name in ("f2d", "sigma2d", "d_hat")]
    renders = {path: render_lifted(**inputs, lifting=LiftingConfig(), path=path)
               for path in ("fast", "triton")}
    for name in ("feature", "mask_logits", "weights", "depth"):
        error = _relative_error(getattr(renders["triton"], name), getattr(renders["fast"], name))
        assert error <= PAPER_TRITON_TOLERANCE, f"{name}: {error:.1e}"
    grads = {path: _gradients(render, maps) for path, render in renders.items()}
    for name, triton, fast in zip(("f2d", "sigma2d", "d_hat"), grads["triton"], grads["fast"],
                                  strict=True):
        error = _relative_error(triton, fast)
        assert error <= PAPER_TRITON_TOLERANCE, f"d/d {name}: {error:.1e}"


def test_a_bf16_step_on_cuda_is_finite_and_near_the_float32_step() -> None:
    float32, _ = step_losses([], iterations=4, device=CUDA)
    bf16, _ = step_losses(["train.precision=bf16"], iterations=4, device=CUDA)
    assert_losses_close(bf16, float32, BF16_RTOL)


@pytest.mark.parametrize("overrides", [
    ["train.channels_last=true"],
    [COMPILE],
    [COMPILE, "train.compile_mode=reduce-overhead"],  # CUDA graphs
], ids=["channels_last", "compile", "compile-reduce-overhead"])
def test_speed_switches_equal_the_default_step_on_cuda(overrides: list[str]) -> None:
    default, _ = step_losses([], iterations=4, device=CUDA)
    switched, _ = step_losses(overrides, iterations=4, device=CUDA)
    assert_losses_close(switched, default, CUDA_SWITCH_RTOL)
