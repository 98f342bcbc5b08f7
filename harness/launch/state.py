"""The sweep directory `<runs-dir>/<sweep>/` (contract 2) and what it says about each trial.

    sweep.yaml     the resolved sweep spec (re-runnable: python -m harness.sweep THIS_FILE)
    state.json     the driver's state: each trial's job id and executor (for re-attaching)
    .driver.lock   held by the running driver: one driver per sweep directory
    <trial_id>/    one run directory per trial: trial.json, the training run, metrics.json,
                   result.json (written last, only when train and eval finished) or error.json

The run directories are the truth about trials: result.json means done, error.json failed,
pruned.json pruned by a search. state.json only remembers jobs, so that a driver started again
re-attaches to jobs still running instead of submitting them twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.errors import UserError
from harness.io import atomic_write_json, atomic_write_yaml

SPEC_FILE = "sweep.yaml"
STATE_FILE = "state.json"
LOCK_FILE = ".driver.lock"
TRIAL_FILE = "trial.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
PRUNED_FILE = "pruned.json"
METRICS_FILE = "metrics.json"
STATUS_FILE = "status.json"  # written by the training loop

# Outcomes of a trial as its run directory records them.
DONE, FAILED, PRUNED, NEW = "done", "failed", "pruned", "new"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when missing or unreadable (being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def outcome(run_dir: Path) -> str:
    """done, failed, pruned or new, from the files in a run directory."""
    if (run_dir / RESULT_FILE).is_file():
        return DONE
    if (run_dir / ERROR_FILE).is_file():
        return FAILED
    if (run_dir / PRUNED_FILE).is_file():
        return PRUNED
    return NEW


def write_error(run_dir: Path, trial_id: str, stage: str, message: str) -> None:
    """Record a failed trial: RUN_DIR/error.json {trial_id, stage, message} (contract 2)."""
    atomic_write_json(run_dir / ERROR_FILE,
                      {"trial_id": trial_id, "stage": stage, "message": message})


def clear_error(run_dir: Path) -> None:
    """Forget a failure before a retry (kept beside as error.prev.json)."""
    path = run_dir / ERROR_FILE
    if path.is_file():
        os.replace(path, run_dir / "error.prev.json")


@dataclass(frozen=True)
class Progress:
    """A run directory's training progress (status.json) and outcome."""

    outcome: str
    iteration: int | None = None
    total: int | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    train_state: str | None = None  # running, done, failed (the training loop's own state)

    @classmethod
    def of(cls, run_dir: Path) -> Progress:
        """Read the run directory."""
        status = read_json(run_dir / STATUS_FILE) or {}
        return cls(outcome(run_dir), status.get("iteration"), status.get("total"),
                   status.get("it_per_s"), status.get("eta_s"), status.get("state"))


class SweepDir:
    """The directory of one sweep: its spec, its driver state and its trials' run dirs."""

    def __init__(self, runs_dir: str | Path, name: str):
        self.path = Path(runs_dir).resolve() / name
        self.name = name

    def run_dir(self, trial_id: str) -> Path:
        """The run directory of a trial."""
        return self.path / trial_id

    def trial_ids_on_disk(self) -> list[str]:
        """Trials whose run directory exists (it has a trial.json)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if (p / TRIAL_FILE).is_file())

    @contextmanager
    def driver_lock(self) -> Iterator[None]:
        """Hold the sweep's driver lock; a UserError if another driver holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserError(
                f"{self.path}: another `python -m harness.sweep` is driving this sweep; wait "
                f"for it to finish or stop it (its lock: {self.path / LOCK_FILE})"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def write_spec(self, spec: dict[str, Any]) -> None:
        """Write sweep.yaml (the resolved spec)."""
        atomic_write_yaml(self.path / SPEC_FILE, spec)

    def write_trial(self, record: dict[str, Any]) -> Path:
        """Create a trial's run directory with its trial.json (kept if already there)."""
        run_dir = self.run_dir(record["trial_id"])
        path = run_dir / TRIAL_FILE
        if read_json(path) != record:
            atomic_write_json(path, record)
        return run_dir

    def read_state(self) -> dict[str, Any]:
        """state.json, or an empty state."""
        state = read_json(self.path / STATE_FILE) or {}
        state.setdefault("sweep", self.name)
        state.setdefault("trials", {})
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        """Write state.json atomically (the caller holds the driver lock)."""
        atomic_write_json(self.path / STATE_FILE, {**state, "updated": time.time()})

    def check_plan(self, trial_ids: list[str], hint: str) -> None:
        """Refuse a plan that leaves out trials already in this directory (a changed preset,
        data set or grid): one directory holds one sweep's results, never a mix."""
        missing = sorted(set(self.trial_ids_on_disk()) - set(trial_ids))
        if missing:
            old = read_json(self.run_dir(missing[0]) / TRIAL_FILE) or {}
            raise UserError(
                f"{self.path} holds {len(missing)} trial(s) that this plan does not have (e.g. "
                f"{missing[0]}, preset {old.get('preset')}): {hint}; use another --runs-dir "
                "to keep both, or remove that directory"
            )
