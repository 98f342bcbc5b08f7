"""Weights & Biases logging for one run directory (offline unless the user is logged in).

One W&B run per run directory: its id is stored in `RUN_DIR/wandb_run_id` and reused with
`resume="allow"`, so a resumed or requeued trial continues the same W&B run. In offline mode
every W&B file stays inside the run directory (`WANDB_DIR`, `WANDB_CACHE_DIR`,
`WANDB_DATA_DIR`, `WANDB_CONFIG_DIR` under `RUN_DIR/wandb-files/`); upload later with
`wandb sync RUN_DIR/wandb-files/wandb/offline-run-*`. A requeue's SIGTERM kills wandb's service
with whatever it had not written; the next attempt logs those rows again (`log_missing`), so
the offline files hold every row of the run's metrics.jsonl.

Conventions: `group` is the sweep name, `job_type` train or eval (each with its own stable
id), tags name the model, data, preset (and sweep and variant of a sweep trial), the config
is the resolved config flattened (plus `trial.*`), and evaluation metrics summarise to their
best value (`METRIC_GOALS`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config import ExperimentConfig, TrackingConfig, config_to_dict, flatten
from harness.io import atomic_write_text
from harness.metrics import registry as metric_registry

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"
TRIAL_FILE = "trial.json"  # written by the sweep driver (harness/launch/state.py)
# W&B summaries of evaluation metrics (keys of metrics.json, as harness.evaluate logs them):
# the best value over a run's history (min FID, max identity consistency, ...).
METRIC_GOALS = metric_registry.goals()


def resolve_mode(tracking: TrackingConfig) -> str:
    """"online" only when asked for or when credentials exist; otherwise "offline"."""
    if tracking.mode != "auto":
        return tracking.mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file() and (
        "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    )
    return "online" if has_key else "offline"


def run_id(run_dir: Path, job_type: str = "train") -> str:
    """The stable W&B run id of a run directory's `job_type` run (created on first use).

    The training run's id lives in `RUN_DIR/wandb_run_id`, another job type's (eval) in
    `RUN_DIR/wandb_run_id.<job_type>`.
    """
    path = run_dir / (RUN_ID_FILE if job_type == "train" else f"{RUN_ID_FILE}.{job_type}")
    if path.is_file():
        return path.read_text().strip()
    new_id = secrets.token_hex(4)  # 8 characters in [0-9a-f], valid as a W&B run id
    atomic_write_text(path, new_id + "\n")
    return new_id


def run_labels(config: ExperimentConfig, run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """W&B tags (model, data, preset; sweep and variant for a sweep trial) and the trial's
    identity as config keys (`trial.id`, `trial.variant`, `trial.seed`, `trial.sweep`)."""
    tags = [f"model:{config.model.name}", f"data:{config.data.source}",
            f"preset:{config.preset}"]
    extra: dict[str, Any] = {}
    try:
        trial = json.loads((run_dir / TRIAL_FILE).read_text())
    except (OSError, ValueError):
        return tags, extra
    tags += [f"sweep:{trial.get('sweep')}", f"variant:{trial.get('variant')}"]
    extra = {f"trial.{key}": trial.get(key) for key in ("sweep", "variant", "seed")}
    extra["trial.id"] = trial.get("trial_id")
    return tags, extra


class Tracker:
    """Logs scalars, images, tables and summaries of one run; a no-op when tracking is off."""

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: Path,
        job_type: str = "train",
        enabled: bool | None = None,
        name: str | None = None,
    ):
        tracking = config.tracking
        self.enabled = tracking.wandb if enabled is None else enabled
        self.run = None
        self.mode = "disabled"
        self.wandb_dir = run_dir / "wandb-files"
        if not self.enabled:
            return
        self.mode = mode = resolve_mode(tracking)
        if mode == "disabled":
            self.enabled = False
            return
        import wandb

        wandb_dir = self.wandb_dir
        for variable, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"),
                              ("WANDB_DATA_DIR", "data"), ("WANDB_CONFIG_DIR", "config")):
            (wandb_dir / sub).mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(wandb_dir / sub)
        os.environ.setdefault("WANDB_SILENT", "true")
        tags, extra = run_labels(config, run_dir)
        default_name = run_dir.name if job_type == "train" else f"{run_dir.name}-{job_type}"
        self.run = wandb.init(
            project=tracking.project, entity=tracking.entity, group=tracking.group,
            job_type=job_type, id=run_id(run_dir, job_type), resume="allow", mode=mode,
            dir=str(wandb_dir), name=name or default_name, tags=tags,
            config={**flatten(config_to_dict(config)), **extra},
        )
        self.run.define_metric("iteration")
        self.run.define_metric("train/*", step_metric="iteration")
        for key, goal in METRIC_GOALS.items():
            self.run.define_metric(key, step_metric="iteration", summary=goal)
        log.info("W&B %s run %s in %s", mode, self.run.id, wandb_dir)

    def _call(self, action: Callable[[Any], Any]) -> None:
        """Run `action(run)`; if W&B fails (its service killed by a requeue's SIGTERM, a full
        disk), warn once and stop tracking instead of failing the training run."""
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            log.warning("W&B stopped working (%s: %s); this run goes on without it",
                        type(error).__name__, error)
            self.run = None

    def log(self, values: dict[str, Any], iteration: int | None = None,
            images: dict[str, Path] | None = None) -> None:
        """Log scalars (and W&B media objects) at `iteration`, with image files `images`
        (key -> path) in the same history row."""
        step = {"iteration": iteration} if iteration is not None else {}
        if self.run is not None and images:
            import wandb

            values = {**values, **{key: wandb.Image(str(path)) for key, path in images.items()}}
        self._call(lambda run: run.log({**values, **step}))

    def log_missing(self, rows: list[dict[str, Any]], prefix: str = "train/") -> int:
        """Log the rows (each with an `iteration`) that the run's history lacks: those whose
        iteration no earlier attempt's offline file holds in a row with a `prefix` key (the
        attempt's wandb service was killed, e.g. by a requeue's SIGTERM, before writing
        them). Offline mode only (the offline files are the history `wandb sync` uploads);
        the number of rows logged."""
        if self.run is None or self.mode != "offline":
            return 0
        from harness.wandb_offline import logged_iterations

        logged = logged_iterations(self.wandb_dir, self.run.id, prefix)
        missing = [row for row in rows if int(row["iteration"]) not in logged]
        for row in missing:
            self.log({k: v for k, v in row.items() if k != "iteration"}, int(row["iteration"]))
        if missing:
            log.info("W&B: logged %d history row(s) an earlier attempt lost", len(missing))
        return len(missing)

    def summary(self, values: dict[str, Any]) -> None:
        """Set run summary values."""
        self._call(lambda run: run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (flushes offline files)."""
        self._call(lambda run: run.finish(exit_code=exit_code))
        self.run = None
