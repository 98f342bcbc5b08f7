"""The GPU speed switches of `train` (docs/training.md#gpu-speed-switches), off by default.

- `precision: bf16`: the training step (harness.training.step) runs G's and D's forward passes
  under bfloat16 autocast (`autocast`) and casts what they return to float32. In float32
  whatever the switch: the losses (computed on those float32 outputs), the R1 pass and the
  path-length pass (their double backward differentiates gradients, which bfloat16 would
  round to 3 digits before squaring them), and inside G the volume rendering (rays, NeRF
  weights with their cumulative sum, compositing; `models.precision` says why), the Adam
  updates and the EMA (the weights themselves stay float32; autocast casts copies).
- `compile`: the listed networks run through `torch.compile` in `compile_mode`, compiled in
  place (`nn.Module.compile`) so that their parameter names, and with them every checkpoint,
  are the same as without. AOTAutograd's graphs have no double backward, so the R1 and
  path-length passes run the networks eagerly (`eager_regularization`). Random ops (the
  render net's noise injection) draw from torch's generator as in eager mode (inductor's
  `fallback_random`; its own generator would give other noise and shift every later draw,
  such as the stratified ray depths), so a compiled step computes the eager step's numbers
  up to the order of float sums.
- `channels_last`: the render net's and D's 4D weights and inputs in NHWC memory, which cuDNN's
  convolution kernels prefer (tensor cores).

The EMA generator is copied before any switch applies, so it, its snapshots and evaluation are
plain eager float32 networks.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from harness.config import TrainConfig


def autocast(train: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    """bfloat16 autocast on `device` for `precision: bf16`; for float32 nothing at all."""
    if train.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def eager_regularization(train: TrainConfig) -> AbstractContextManager[Any]:
    """The R1 and path-length passes' context: compiled networks run eagerly (torch.compile's
    graphs cannot be differentiated twice); nothing when nothing is compiled."""
    return torch.compiler.set_stance("force_eager") if train.compile else nullcontext()


def begin_step(train: TrainConfig) -> None:
    """Mark the start of a training step for CUDA graphs (`compile_mode: reduce-overhead`):
    the previous step's replays' outputs may be overwritten from here on (torch.compile's
    trees of CUDA graphs otherwise guess where a training iteration ends)."""
    if train.compile and train.compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()


def apply_speed_switches(generator: nn.Module, discriminator: nn.Module,
                         train: TrainConfig) -> None:
    """Put the render net and D in channels-last memory and compile the networks listed in
    `train.compile`, in place (every generator of the zoo has a `render_net`)."""
    networks = {"render_net": generator.render_net, "discriminator": discriminator}
    if train.channels_last:
        for network in networks.values():
            to_channels_last(network)
    if train.compile:
        import torch._inductor.config as inductor  # (imported only when compiling)

        inductor.fallback_random = True  # eager's random numbers (module docstring)
    for name in train.compile:
        networks[name].compile(mode=train.compile_mode)


def to_channels_last(network: nn.Module) -> None:
    """Store `network`'s 4D parameters channels last and convert its 4D tensor arguments to
    channels last on every call (a forward pre-hook); values and parameter names unchanged."""
    for parameter in network.parameters():
        if parameter.ndim == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
    network.register_forward_pre_hook(_channels_last_arguments, with_kwargs=True)


def _channels_last_arguments(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
                             ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (tuple(_channels_last(value) for value in args),
            {name: _channels_last(value) for name, value in kwargs.items()})


def _channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value
