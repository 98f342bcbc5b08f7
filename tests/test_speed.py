"""The GPU speed switches (harness.training.speed) on CPU: bf16 autocast keeps the volume
rendering, the losses and the regularisation passes in float32; channels-last and compiled
steps equal the default float32 eager step; checkpoints do not depend on the switches; the
switches are in the config and the trial id as docs/training.md says."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.bench.models import setup
from harness.bench.training import SWITCHES
from harness.config import config_to_dict, flatten, load_config, resolve_config, with_added_keys
from harness.launch.spec import ID_IGNORED, config_hash
from harness.reproducibility import machine as harness_machine
from harness.runtime.cameras import sample_cameras
from harness.runtime.checkpoint import latest_training_state, load_checkpoint
from harness.training.loop import training_loop
from harness.training.step import gan_step
from models.camera import CameraPrior, intrinsics, look_at_origin, pixel_rays
from models.lifting import LiftingConfig, render_lifted
from models.rendering import nerf_weights, ray_depths, ray_points

CPU = torch.device("cpu")
(COMPILE,) = SWITCHES["compile"]  # both networks compiled, the bench's compile row
# Relative tolerance of the losses of a switch against the default float32 eager step over
# the first iterations of the smoke preset. channels-last and compile change the order of
# float sums only (oneDNN's NHWC kernels, inductor's fused kernels): measured at most 3e-7
# relative (channels-last 2.4e-7, compile 2.6e-7), float32 rounding. Adam's first steps
# normalise each gradient element, so a rounding that flips a near-zero gradient's sign moves
# that weight by 2 lr; 1e-4 leaves room for that, while a real difference (noise left out, a
# layer skipped, a bfloat16 cast) moves the losses by 1e-3 and more.
SWITCH_RTOL = 1e-4
# bf16 against float32: bfloat16 keeps 8 bits of mantissa (~3 digits) through two networks;
# measured at most 1.0% relative on the smoke preset's losses.
BF16_RTOL = 3e-2


class _Ops(TorchDispatchMode):
    """Records each op with the dtype and channels-last layout of its first tensor argument."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, torch.dtype, bool]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
                           ) -> Any:
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is not None:
            channels_last = first.ndim == 4 and first.is_contiguous(
                memory_format=torch.channels_last)
            self.calls.append((func.overloadpacket.__name__, first.dtype, channels_last))
        return func(*args, **(kwargs or {}))

    def dtypes(self, name: str) -> Counter:
        """How often op `name` ran on each floating-point dtype."""
        return Counter(dtype for op, dtype, _ in self.calls
                       if op == name and dtype.is_floating_point)


def step_losses(overrides: list[str], iterations: int = 3, record: bool = False,
                device: torch.device = CPU) -> tuple[list[dict[str, float]], list[_Ops]]:
    """The losses of the first `iterations` steps of 3D-SSGAN at the smoke preset with
    `overrides` on `device`, on random real pairs (harness.bench.models.setup: the same start
    whatever the overrides), lazy R1 and path length at iteration 0; with `record`, each
    step's ops."""
    s = setup("3dssgan", "smoke", device, overrides)
    losses, recorded = [], []
    for iteration in range(iterations):
        torch.manual_seed(iteration)
        ops = _Ops()
        with ops if record else nullcontext():
            step = gan_step(s.gan, s.real_image, s.real_mask, sample_cameras, s.rng, iteration,
                            regularize=iteration == 0, path_length=iteration == 0)
        assert all(value.dtype == torch.float32 for value in step.values())
        losses.append({name: value.item() for name, value in step.items()})
        recorded.append(ops)
    return losses, recorded


def assert_losses_close(actual: list[dict[str, float]], expected: list[dict[str, float]],
                        rtol: float) -> float:
    """Every loss of every step within `rtol` of the expected one; the largest relative gap."""
    worst = 0.0
    for got, want in zip(actual, expected, strict=True):
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert math.isfinite(got[name])
            gap = abs(got[name] - value) / max(abs(value), 1e-12)
            assert gap <= rtol, f"{name}: {got[name]} vs {value} ({gap:.1e})"
            worst = max(worst, gap)
    return worst


def test_volume_rendering_stays_float32_under_bf16_autocast() -> None:
    generator = torch.Generator().manual_seed(0)
    cam2world = look_at_origin(CameraPrior().sample(2, generator))
    origins, directions = pixel_rays(cam2world, intrinsics(), 4)  # (2, 16, 3)
    t = ray_depths(2, 16, 6, stratified=True, generator=generator)
    maps = {"f2d": torch.randn(2, 13, 8, 4, 4, generator=generator),
            "sigma2d": torch.rand(2, 13, 4, 4, generator=generator),
            "d_hat": 7 * torch.rand(2, 13, 4, 4, generator=generator)}
    exact = render_lifted(**maps, volume_depth=8, points=ray_points(origins, directions, t), t=t,
                          lifting=LiftingConfig())
    sigma = torch.rand(2, 16, 6, generator=generator) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (directions @ directions.transpose(1, 2)).dtype == torch.bfloat16  # autocast on
        rays = pixel_rays(cam2world, intrinsics(), 4)
        points = ray_points(*rays, t)
        render = render_lifted(**{name: value.bfloat16() for name, value in maps.items()},
                               volume_depth=8, points=points, t=t, lifting=LiftingConfig())
        weights = nerf_weights(sigma.bfloat16(), t)
    # the geometry is computed as without autocast, bit for bit
    assert torch.equal(rays[1], directions) and points.dtype == torch.float32
    # bfloat16 maps (as autocast's networks return them) are rendered in float32
    for name in ("feature", "mask_logits", "weights", "depth"):
        assert getattr(render, name).dtype == torch.float32
        torch.testing.assert_close(getattr(render, name), getattr(exact, name), rtol=2e-2,
                                   atol=2e-2)
    assert torch.equal(weights, nerf_weights(sigma.bfloat16().float(), t))


def test_a_bf16_step_runs_the_networks_in_bfloat16_and_the_rest_in_float32() -> None:
    float32, _ = step_losses([])
    bf16, ops = step_losses(["train.precision=bf16"], record=True)
    worst = assert_losses_close(bf16, float32, BF16_RTOL)
    assert worst > 1e-5  # bfloat16 did run: an exact match would mean autocast was off
    # iteration 0 (R1 and path length, float32) and iteration 1 (no regularisation)
    regularised, plain = ops[0], ops[1]
    assert set(plain.dtypes("convolution")) == {torch.bfloat16}
    assert {torch.bfloat16, torch.float32} <= set(regularised.dtypes("convolution"))
    for step in (regularised, plain):  # NeRF weights (Eqs. 2-3) and the fast path's Eq. 4
        for op in ("cumsum", "_embedding_bag", "expm1"):
            assert set(step.dtypes(op)) == {torch.float32}, op


def test_a_channels_last_step_equals_the_default_step() -> None:
    default, _ = step_losses([])
    channels_last, _ = step_losses(["train.channels_last=true"])
    assert_losses_close(channels_last, default, SWITCH_RTOL)
    s = setup("3dssgan", "smoke", CPU, ["train.channels_last=true"])
    feature = torch.randn(2, 16, 16, 16)  # the render net's input (B, C, r, r)
    image, mask = torch.randn(2, 3, 32, 32), torch.randn(2, 13, 32, 32)
    recorded = _Ops()
    with recorded:  # the render net's and D's convolutions read NHWC activations
        s.gan.generator.render_net(feature)
        s.gan.discriminator(image=image, mask=mask)
    inputs = [layout for op, _, layout in recorded.calls if op == "convolution"]
    # all but three of 44: the FIR blurs after the render net's zero-insertion upsamples and
    # D's conv after the minibatch-std concatenation read the NCHW tensors those reshapes make
    # (keeping NHWC there would change the default path's numbers: the render net's input can
    # itself be channels last, from the lifting's feature layout)
    assert len(inputs) > 20 and sum(inputs) >= len(inputs) - 3
    default_state = setup("3dssgan", "smoke", CPU).gan.discriminator.state_dict()
    assert s.gan.discriminator.state_dict().keys() == default_state.keys()


def test_a_compiled_run_equals_the_eager_run_and_their_checkpoints_are_interchangeable(
    tmp_path: Path, smoke_overrides: list[str]
) -> None:
    # Two iterations, the first with lazy R1 and path length (run eagerly). Inductor compiles
    # the render net and D: about 3 minutes on a 2-core CPU without its caches, 30 s with them
    common = [*smoke_overrides, "train.iterations=2", "train.log_every=1"]
    eager = training_loop(load_config(None, "smoke", common), tmp_path / "eager", progress=False)
    compiled = training_loop(load_config(None, "smoke", [*common, COMPILE]),
                             tmp_path / "compiled", progress=False)

    def losses(run: str) -> list[dict[str, float]]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k.startswith("train/")
                 and k != "train/it_per_s"} for line in lines]

    assert_losses_close(losses("compiled"), losses("eager"), SWITCH_RTOL)
    # the same parameter names (no `_orig_mod.`): each run's checkpoint loads into the other's
    # networks, and the compiled run resumes without compiling
    for name in ("generator", "discriminator"):
        assert getattr(compiled, name).state_dict().keys() == getattr(eager, name).state_dict(
        ).keys()
    compiled_state = load_checkpoint(latest_training_state(tmp_path / "compiled"))
    eager_state = load_checkpoint(latest_training_state(tmp_path / "eager"))
    for name in ("generator", "discriminator", "generator_ema"):
        getattr(eager, name).load_state_dict(compiled_state[name])
        getattr(compiled, name).load_state_dict(eager_state[name])
    resumed = training_loop(load_config(None, "smoke", [*common, "train.iterations=3"]),
                            tmp_path / "compiled", progress=False)
    assert resumed.iteration == 3 and len(losses("compiled")) == 3


def test_the_switches_are_config_keys_that_keep_existing_trial_ids() -> None:
    config = load_config(None, "smoke", [])
    train = config.train
    assert (train.precision, train.compile, train.compile_mode, train.channels_last) == (
        "float32", [], "default", False)
    # a config saved before the switches existed loads with the values it was trained with
    saved = config_to_dict(config)
    for key in ("precision", "compile", "compile_mode", "channels_last"):
        del saved["train"][key]
    assert resolve_config(with_added_keys(saved)) == config
    # the default config's id is the one it had before: the new keys are left out of the hash
    flat = {key: value for key, value in flatten(config_to_dict(config)).items()
            if not any(key == skip or key.startswith(skip) for skip in ID_IGNORED)
            and key != "train.precision"}
    before = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:8]
    assert config_hash(config) == before
    # bf16 computes something else; compile and channels-last only run it differently
    assert config_hash(load_config(None, "smoke", ["train.precision=bf16"])) != before
    same = load_config(None, "smoke", [COMPILE, "train.compile_mode=reduce-overhead",
                                       "train.channels_last=true"])
    assert config_hash(same) == before
    # the compiled networks are a set: one spelling, one id
    assert load_config(None, "smoke", ["train.compile=[render_net, discriminator, render_net]"]
                       ).train.compile == ["discriminator", "render_net"]


GOLDEN = Path(__file__).parent / "data" / "golden_step.json"


def test_the_default_step_computes_the_recorded_numbers() -> None:
    """The default (float32, eager, contiguous) step at one thread gives, bit for bit, the
    losses recorded in tests/data/golden_step.json for this machine: a change that alters
    what the default step computes (a memory-format change inside the render net once did:
    the README's headline FIDs moved from 67.87 to 88.2) fails here instead of silently
    changing every result. Machines without a record skip; record one with
    HARNESS_RECORD_GOLDEN=1 on code whose numbers are known good."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses, _ = step_losses([])
    finally:
        torch.set_num_threads(threads)
    records = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    machine = harness_machine()
    if os.environ.get("HARNESS_RECORD_GOLDEN") == "1":
        records[machine] = losses
        GOLDEN.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    if machine not in records:
        pytest.skip(f"no recorded step for {machine!r} in {GOLDEN.name}")
    assert losses == records[machine]
