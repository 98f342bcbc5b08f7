"""Weights & Biases logging for one run directory (offline unless the user is logged in).

One W&B run per run directory: its id is stored in `RUN_DIR/wandb_run_id` and reused with
`resume="allow"`, so a resumed or requeued trial continues the same W&B run. In offline mode
every W&B file stays inside the run directory (`WANDB_DIR`, `WANDB_CACHE_DIR`,
`WANDB_DATA_DIR`); upload later with `wandb sync RUN_DIR/wandb/offline-run-*`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from harness.config import ExperimentConfig, TrackingConfig, config_to_dict, flatten
from harness.io import atomic_write_text

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"


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


def run_id(run_dir: Path) -> str:
    """The stable W&B run id of a run directory (created on first use)."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    import wandb

    new_id = wandb.util.generate_id()
    atomic_write_text(path, new_id + "\n")
    return new_id


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
        if not self.enabled:
            return
        mode = resolve_mode(tracking)
        if mode == "disabled":
            self.enabled = False
            return
        import wandb

        wandb_dir = run_dir / "wandb-files"
        for variable, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"),
                              ("WANDB_DATA_DIR", "data")):
            (wandb_dir / sub).mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(wandb_dir / sub)
        os.environ.setdefault("WANDB_SILENT", "true")
        resolved = config_to_dict(config)
        tags = [f"model:{config.model.name}", f"data:{config.data.source}",
                f"preset:{config.preset}"]
        self.run = wandb.init(
            project=tracking.project, entity=tracking.entity, group=tracking.group,
            job_type=job_type, id=run_id(run_dir), resume="allow", mode=mode,
            dir=str(wandb_dir), name=name or run_dir.name, tags=tags,
            config=flatten(resolved),
        )
        self.run.define_metric("iteration")
        self.run.define_metric("train/*", step_metric="iteration")
        log.info("W&B %s run %s in %s", mode, self.run.id, wandb_dir)

    def log(self, values: dict[str, Any], iteration: int | None = None) -> None:
        """Log scalars (and W&B media objects) at `iteration`."""
        if self.run is not None:
            self.run.log({**values, **({"iteration": iteration} if iteration is not None else {})})

    def log_image(self, key: str, path: Path, iteration: int, caption: str = "") -> None:
        """Log an image file."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption), "iteration": iteration})

    def summary(self, values: dict[str, Any]) -> None:
        """Set run summary values."""
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (flushes offline files)."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
