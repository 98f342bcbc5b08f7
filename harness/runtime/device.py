"""The torch device a run uses, from a config value or a flag."""

from __future__ import annotations

import torch

from harness.errors import UserError


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """"auto" -> CUDA when present, else CPU; anything else as torch names it. A UserError
    names `setting` (the config key or flag that gave `name`) for a name torch does not know
    or CUDA that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{setting} = {name!r} is not a device; use auto, cpu, cuda or cuda:N"
                        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{setting} = {name!r} but CUDA is not available; use auto or cpu")
    return device
