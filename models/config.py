"""Base class of every typed config in the project (models and harness alike)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.render_net import is_power_of_two


class Schema(BaseModel):
    """A typed config: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(Schema):
    """Fields every model shares; each model subclasses this with its own fields.

    Defaults are the paper-scale settings; the `smoke` and `cpu` presets shrink them.
    """

    # Keys earlier versions had and this one dropped: a snapshot that still holds them loads
    # without them (each model lists its own and why they are safe to drop).
    RETIRED_KEYS: ClassVar[frozenset[str]] = frozenset()
    # Keys added since runs were saved, with the value that reproduces how those runs were
    # trained: a saved config (run directory, snapshot) without the key gets this value, not
    # the new default (harness.config.with_added_keys).
    ADDED_KEYS: ClassVar[dict[str, Any]] = {}

    name: str
    num_parts: int = 13  # K, semantic classes the generator composes (background included)
    resolution: int = 512  # pixels, side of the output image and mask
    # Activation checkpointing: render-net and discriminator blocks working at this resolution
    # or above keep no activations and recompute them in backward (less memory, ~1/3 more
    # time in those blocks; the gradients are unchanged). None: off.
    checkpoint_resolution: int | None = Field(None, ge=4)


class PartLatentConfig(ModelConfig):
    """A model whose latents are Eq. 1's slots, sampled as SemanticStyleGAN (models.generator)."""

    ADDED_KEYS: ClassVar[dict[str, Any]] = {"latent_sampling": "per_slot"}
    # "shared": one z per sample, its w in every slot (SSGAN's training, with style mixing in
    # the loop: train.style_mixing); "per_slot": an independent z per slot (not in the paper)
    latent_sampling: Literal["shared", "per_slot"] = "shared"


def check_powers_of_two(config: Schema, keys: tuple[str, ...], minimum: int) -> None:
    """ValueError unless every field in `keys` is a power of two >= `minimum`."""
    for key in keys:
        value = getattr(config, key)
        if value < minimum or not is_power_of_two(value):
            raise ValueError(f"{key} must be a power of two >= {minimum}, got {value}")


def check_render_resolution(config: Schema) -> None:
    """ValueError if the feature render is finer than the output."""
    if config.render_resolution > config.resolution:
        raise ValueError(f"render_resolution {config.render_resolution} exceeds resolution "
                         f"{config.resolution}")


def check_part_count(num_parts: int, part_names: tuple[str, ...]) -> None:
    """ValueError unless the model composes exactly the classes of the class table."""
    if num_parts != len(part_names):
        raise ValueError(f"num_parts must be {len(part_names)} (the class table)")
