"""What stays float32 when a caller runs a network under bfloat16 autocast.

The training loop may run G's and D's forward passes under `torch.autocast(dtype=bfloat16)`
(`train.precision`, harness.training.speed): convolutions and matrix products then compute in
bfloat16, whose 8-bit mantissa resolves about 3 significant digits. The 2D networks tolerate
that; volume rendering does not. Ray directions come from a matrix product, and 3 digits at
the camera's distance (4 head units) misplace a sample by a quarter of a cell of a 64-cell
volume (2/64 wide). The transmittance T_i = exp(-sum_{j<i} sigma_j delta_j) (Eqs. 2-3)
exponentiates a running sum, so the sum's rounding becomes the weights' relative error and
grows along the ray; the weighted sums of Eq. 4 add up to N samples of them. Functions marked
`float32` run with autocast off and their bfloat16 or float16 tensor arguments in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def float32(function: F) -> F:
    """`function`, run in float32 when called under autocast: autocast is switched off for the
    call and its floating-point tensor arguments of lower precision (positional or keyword)
    are cast to float32. Without autocast the call is unchanged (not even a copy)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = next((value.device.type for value in (*args, *kwargs.values())
                       if isinstance(value, torch.Tensor)), None)
        if device is None or not torch.is_autocast_enabled(device):
            return function(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return function(*(to_float32(value) for value in args),
                            **{name: to_float32(value) for name, value in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def to_float32(value: Any) -> Any:
    """A bfloat16 or float16 tensor in float32; anything else (float32 included) as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    return value
