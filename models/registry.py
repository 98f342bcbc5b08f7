"""The model zoo's registry: a name -> how to build the model's networks and configs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from models.config import ModelConfig
from models.discriminator import image_and_mask


@dataclass(frozen=True)
class ModelSpec:
    """Everything the harness needs to know about one model of the zoo."""

    name: str  # registry name, the value of the config key `model.name`
    config_class: type[ModelConfig]  # typed config; its defaults are the paper's settings
    build_generator: Callable[[Any], nn.Module]  # config -> generator (see models.generator)
    build_discriminator: Callable[[Any], nn.Module]  # config -> discriminator on image + mask
    # (config, real image (B, 3, R, R), real mask (B, K, R, R)) -> D's keyword arguments on real
    # data, the same keys D gets from a generator output (models.discriminator); IDE-3D adds
    # the low-resolution copies its dual discriminator reads
    real_inputs: Callable[[Any, Tensor, Tensor], dict[str, Tensor]] = image_and_mask
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset -> model overrides
    disentanglement: str = "strong"  # "strong" (compositional) or "weak" (holistic), Table 2
    three_d_aware: bool = True  # renders from a 3D representation, Table 2
    description: str = ""

    def cannot(self, operation: str) -> str | None:
        """Why this model cannot do `operation`, None when it can: "pose", "turntable" and
        "depth" need a camera (a 3D-aware model); "progressive" needs per-part generators and
        "shape-edit" a shape code of the part's own (a compositional model)."""
        if operation in ("pose", "turntable", "depth") and not self.three_d_aware:
            return (f"{self.name} is a 2D model: it has no camera, so every view is the same "
                    "image" + (" and there is no depth" if operation == "depth" else ""))
        if operation == "progressive" and self.disentanglement == "weak":
            return (f"{self.name} is a holistic model (one code for the whole face, no "
                    "per-part generators): progressive generation is undefined")
        if operation == "shape-edit" and self.disentanglement == "weak":
            return (f"{self.name} is a holistic model: a part's shape code is the whole "
                    "face's, so a shape edit changes the whole geometry")
        return None


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the zoo; a second model under the same name is an error."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    _MODELS[spec.name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    """The spec registered under `name`; KeyError names the registered models."""
    _load_zoo()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def model_names() -> list[str]:
    """Names of every registered model, sorted."""
    _load_zoo()
    return sorted(_MODELS)


def _load_zoo() -> None:
    """Import the model modules, which register themselves."""
    import models.zoo  # noqa: F401
