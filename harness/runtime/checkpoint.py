"""Checkpoint files of a run directory: full training state and light network snapshots.

    RUN_DIR/checkpoints/training-state-{iteration:08d}.pt   G, D, G_ema, optimizers, RNG, ...
    RUN_DIR/checkpoints/network-snapshot-{iteration:08d}.pt G_ema + resolved config

Both are written atomically and read with `torch.load(weights_only=True)`, so loading a file
cannot execute code. Only the newest `KEEP_TRAINING_STATES` training states are kept, and the
newest `train.keep_snapshots` network snapshots plus those marked by an empty file beside them,
`network-snapshot-{iteration:08d}.pt.keep`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError
from harness.io import atomic_torch_save, remove_temp_files

KEEP_TRAINING_STATES = 2
_STATE = re.compile(r"training-state-(\d{8})\.pt$")
_SNAPSHOT = re.compile(r"network-snapshot-(\d{8})\.pt$")
KEEP_MARKER = ".keep"  # network-snapshot-*.pt.keep: never pruned


def checkpoint_dir(run_dir: Path) -> Path:
    """The checkpoints folder of a run directory."""
    return run_dir / "checkpoints"


def _numbered(folder: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return sorted(found)


def latest_training_state(run_dir: Path) -> Path | None:
    """The newest training-state file, or None."""
    found = _numbered(checkpoint_dir(run_dir), _STATE)
    return found[-1][1] if found else None


def latest_snapshot(run_dir: Path) -> Path | None:
    """The newest network snapshot, or None."""
    found = _numbered(checkpoint_dir(run_dir), _SNAPSHOT)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """The RNG states of Python and torch (CPU and CUDA)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by `rng_state`."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any],
                    snapshot: dict[str, Any], keep_snapshots: int) -> Path:
    """Write the training state and the network snapshot of `iteration`; prune old states and
    all but the newest `keep_snapshots` snapshots (0: keep all) not marked to keep."""
    folder = checkpoint_dir(run_dir)
    atomic_torch_save(folder / f"network-snapshot-{iteration:08d}.pt", snapshot)
    if keep_snapshots:
        for _, old in _numbered(folder, _SNAPSHOT)[:-keep_snapshots]:
            if not old.with_name(old.name + KEEP_MARKER).exists():
                old.unlink()
    path = folder / f"training-state-{iteration:08d}.pt"
    atomic_torch_save(path, state)
    for _, old in _numbered(folder, _STATE)[:-KEEP_TRAINING_STATES]:
        old.unlink()
    return path


def remove_interrupted_writes(run_dir: Path) -> None:
    """Delete the temporary files of checkpoint writes that never finished (a killed run)."""
    for names in (_STATE, _SNAPSHOT):
        remove_temp_files(checkpoint_dir(run_dir), names)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a UserError names an unreadable file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read is the same user problem
        raise UserError(
            f"{path}: cannot read checkpoint ({type(error).__name__}: {error}); delete it to "
            "resume from the previous one, or start a new --run-dir"
        ) from None


@dataclass
class LoadedGenerator:
    """The EMA generator of a run's snapshot, in eval mode, with what produced it."""

    generator: torch.nn.Module
    config: Any  # harness.config.ExperimentConfig of the run
    iteration: int
    path: Path


def load_generator(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    snapshot: str | Path | None = None,
) -> LoadedGenerator:
    """Build the run's model from its snapshot (default: the newest) and load G_ema.

    A UserError names a missing `snapshot` file, a run directory without snapshots or an
    unreadable snapshot.
    """
    from harness.config import resolve_config, with_added_keys
    from models.registry import get_model

    run_dir = Path(run_dir)
    if snapshot is not None and not Path(snapshot).is_file():
        raise UserError(f"{snapshot}: snapshot file not found; give an existing "
                        "network-snapshot-*.pt, or leave out --snapshot for the run's newest")
    path = Path(snapshot) if snapshot is not None else latest_snapshot(run_dir)
    if path is None:
        raise UserError(
            f"{run_dir}: no network snapshot in {checkpoint_dir(run_dir)}; train the run first "
            "(python -m harness.train --run-dir RUN_DIR) or pass a snapshot path"
        )
    state = load_checkpoint(path, map_location=device)
    missing = [key for key in ("config", "generator_ema", "iteration")
               if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path}: not a network snapshot (no {', '.join(missing)}); give a "
                        "network-snapshot-*.pt that this harness wrote")
    config = resolve_config(with_added_keys(_without_retired_keys(state["config"])),
                            file_name=str(path))
    generator = get_model(config.model.name).build_generator(config.model)
    generator.load_state_dict(state["generator_ema"])
    generator.to(device).eval().requires_grad_(False)
    return LoadedGenerator(generator, config, int(state["iteration"]), path)


def _without_retired_keys(config: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's config without the model keys its model has since retired."""
    from models.registry import get_model, model_names

    model = config.get("model")
    if not isinstance(model, dict) or model.get("name") not in model_names():
        return config  # resolve_config names what is wrong
    retired = get_model(model["name"]).config_class.RETIRED_KEYS
    return {**config, "model": {k: v for k, v in model.items() if k not in retired}}
