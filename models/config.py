"""Base class of every typed config in the project (models and harness alike)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """A typed config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(Schema):
    """Fields every model shares; each model subclasses this with its own fields.

    Defaults are the paper-scale settings; the `smoke` and `cpu` presets shrink them.
    """

    name: str
    num_parts: int = 13  # K, semantic classes the generator composes (background included)
    resolution: int = 512  # pixels, side of the output image and mask
