"""Shared by tests that need a run directory without training one: an untrained snapshot."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config import ExperimentConfig, config_to_dict
from harness.io import atomic_torch_save
from models.registry import get_model


def save_untrained_snapshot(path: Path, config: ExperimentConfig) -> Path:
    """A network snapshot at `path` of `config`'s model, untrained (seed 0), iteration 0: all
    a run directory needs for evaluation, reports' rendered figures and the studio."""
    torch.manual_seed(0)
    generator = get_model(config.model.name).build_generator(config.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, {"iteration": 0, "generator_ema": generator.state_dict(),
                             "config": config_to_dict(config)})
    return path
