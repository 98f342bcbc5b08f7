"""One trial as a job: train (resuming from the run directory), evaluate, write result.json.

`TrialJob` is what every executor runs: in this process, in a local process or as a SLURM
job. It is `submitit.helpers.Checkpointable`: on preemption or timeout (USR2) submitit calls
its `checkpoint()`, which requeues the same job. `checkpoint()` saves nothing itself: during
training the loop holds the signal back until its current step ends and saves that iteration
first (`harness.training.preemption`), and the requeued job resumes from the newest checkpoint
on disk, which also covers a plain `scontrol requeue` that never calls `checkpoint()`. Under
DDP every task of the job runs the callable (the loop reads rank and world size from SLURM);
only rank 0 evaluates and writes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from filelock import FileLock, Timeout

from harness.config import ExperimentConfig, resolve_config
from harness.errors import UserError
from harness.io import atomic_write_json
from harness.launch.state import (
    ERROR_FILE,
    PRUNED_FILE,
    RESULT_FILE,
    read_json,
    write_error,
)
from harness.training.distributed import dist_info_from_env

log = logging.getLogger(__name__)

TRIAL_LOCK = ".trial.lock"  # held while a process trains or evaluates the trial
BUSY = "busy"  # status returned when another process already works on the trial


class Pruned(Exception):
    """Raised by a stage callback to stop a trial early (search pruning)."""


# (iteration reached) -> None; may raise Pruned
StageCallback = Callable[[int], None]


def evaluate(run_dir: Path, metrics: list[str] | None = None,
             track: bool | None = None) -> dict[str, Any]:
    """Evaluate a run's newest snapshot as its config's `evaluate.*` says (contract 1):
    `harness.evaluate.evaluate_run`; `metrics` and `track` replace the config's choice (a
    search's intermediate evaluations measure the objective only, untracked)."""
    from harness.evaluate import evaluate_run

    return evaluate_run(run_dir, metrics=metrics, track=track)


def _with_iterations(config: ExperimentConfig, iterations: int) -> ExperimentConfig:
    return config.model_copy(update={"train": config.train.model_copy(
        update={"iterations": iterations})})


def train(config: ExperimentConfig, run_dir: Path, stage_every: int | None = None,
          on_stage: StageCallback | None = None) -> None:
    """Train to config.train.iterations (resuming); with `stage_every`, stop every that many
    iterations and call `on_stage(iteration)` (which may raise Pruned)."""
    from harness.training.loop import iterations_done, training_loop

    total = config.train.iterations
    if stage_every and on_stage is not None:
        for end in range(stage_every, total, stage_every):
            if iterations_done(run_dir) < end:
                training_loop(_with_iterations(config, end), run_dir, progress=False)
            on_stage(end)
    training_loop(config, run_dir, progress=False)


def run_trial(
    run_dir: Path,
    config: ExperimentConfig,
    trial_id: str,
    stage_every: int | None = None,  # iterations between `on_stage` calls (pruning)
    on_stage: StageCallback | None = None,
) -> dict[str, Any] | None:
    """Train, evaluate (as config.evaluate says) and write RUN_DIR/result.json; return the
    result (None on ranks > 0).

    A finished trial returns its result.json without work. A failure writes error.json
    {trial_id, stage, message} (message: a UserError's one line, else "Type: what it says")
    and re-raises (a diverged training returns its failure).
    When another process holds the trial's lock, returns {"status": "busy"} at once.
    """
    info = dist_info_from_env()
    if (run_dir / RESULT_FILE).is_file():  # every rank sees it: nobody trains again
        return read_json(run_dir / RESULT_FILE) if info.is_main else None
    lock = FileLock(run_dir / TRIAL_LOCK) if info.is_main else None
    if lock is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("%s: another process is working on this trial", run_dir)
            return {"trial_id": trial_id, "status": BUSY}
    try:
        if info.is_main:
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            (run_dir / PRUNED_FILE).unlink(missing_ok=True)
        started = time.time()
        stage = "train"
        try:
            train(config, run_dir, stage_every, on_stage)
            if not info.is_main:
                return None
            trained = time.time()
            stage = "eval"
            values = evaluate(run_dir)
        except Pruned as pruned:
            if info.is_main:
                atomic_write_json(run_dir / PRUNED_FILE, {"trial_id": trial_id,
                                                          "message": str(pruned)})
            raise
        except Exception as error:
            from harness.training.loop import TrainingDiverged

            if info.is_main:  # a UserError is its one line already (a full disk, bad input)
                message = (str(error) if isinstance(error, UserError)
                           else f"{type(error).__name__}: {error}")
                write_error(run_dir, trial_id, stage, message)
            if isinstance(error, TrainingDiverged):
                return {"trial_id": trial_id, "status": "failed", "message": str(error)}
            raise
        done = time.time()
        result = {"trial_id": trial_id, "status": "done", "metrics": values,
                  "seconds": {"train": round(trained - started, 3),
                              "eval": round(done - trained, 3),
                              "total": round(done - started, 3)}}
        atomic_write_json(run_dir / RESULT_FILE, result)
        return result
    finally:
        if lock is not None:
            lock.release()


def trial_lock_held(run_dir: Path) -> bool:
    """Whether some process holds the trial's lock (it is training or evaluating)."""
    if not run_dir.is_dir():
        return False
    lock = FileLock(run_dir / TRIAL_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def job_logging() -> None:
    """INFO logging to stderr in a job process that has none (SLURM or local job logs)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            stream=sys.stderr)


class TrialJob(submitit.helpers.Checkpointable):
    """A trial as a submitit job; calling it runs `run_trial`. `checkpoint()` requeues the
    same job, which resumes from the run directory's newest checkpoint."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any], trial_id: str):
        self.run_dir = str(Path(run_dir).resolve())
        self.config = config  # the resolved config, evaluate.* included (plain types)
        self.trial_id = trial_id

    def __call__(self) -> dict[str, Any] | None:
        job_logging()
        config = resolve_config(self.config, file_name=f"{self.run_dir} (trial config)")
        return run_trial(Path(self.run_dir), config, self.trial_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this job as it is (preemption or time limit); close the W&B run first, so
        that its files are complete when the requeued job resumes it."""
        close_wandb_run()
        return super().checkpoint(*args, **kwargs)


def close_wandb_run() -> None:
    """Finish this process's W&B run, if any, marked as preempted."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is not None:
        try:
            run.mark_preempting()
            run.finish(exit_code=1)
        except Exception as error:  # noqa: BLE001 - never stand in the way of a requeue
            log.warning("could not close the W&B run before requeue: %s", error)
