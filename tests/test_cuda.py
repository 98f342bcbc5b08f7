"""The GPU paths: resume, the fast lifting path against the reference, the renderer's memory.

Skipped without CUDA (CI has no GPU); run them on a GPU machine with `pytest tests/test_cuda.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_lifting import _scene, assert_fast_path_equals_reference
from test_training import train_interrupted_and_uninterrupted

from harness.bench.measure import peak_memory_bytes
from harness.bench.renderer import RendererShape, renderer_case
from models.lifting import PSI_FUNCTIONS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


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
