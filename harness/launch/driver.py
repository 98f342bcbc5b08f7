"""Run a grid's trials to the end: skip finished ones, re-attach to running jobs, submit the
rest, wait with a live display, and record every job in state.json as soon as it exists.

Re-running the same command after a crash or Ctrl-C is always safe: a trial with result.json
is never run again, a trial whose job is still alive (state.json, checked with sacct or its
pid) is waited for, and a trial whose job ended without a result is recorded as failed
(error.json) and retried only with --retry-failed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import config_to_dict
from harness.launch import executors as ex
from harness.launch.display import PENDING, RUNNING, Display, Row
from harness.launch.spec import Sweep, Trial
from harness.launch.state import (
    DONE,
    ERROR_FILE,
    FAILED,
    NEW,
    RESULT_FILE,
    Progress,
    SweepDir,
    clear_error,
    read_json,
    write_error,
)
from harness.launch.trial import TrialJob, trial_lock_held

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("fid", "id_consistency", "kid")  # shown for a done trial, first found
RESULT_COLUMNS = ("fid", "kid", "id_consistency", "view/photometric_l1", "view/mask_miou")
LOST_AFTER_S = 20.0  # a job seen ended without a result this long (sacct lags) is lost


@dataclass
class Options:
    """How the driver runs trials."""

    max_parallel: int | None = None  # trials at once (SLURM: array parallelism)
    retry_failed: bool = False  # run failed trials again (they resume from checkpoints)
    poll_s: float = 5.0  # seconds between job-state checks
    lost_after_s: float = LOST_AFTER_S  # grace before a job ended without result is lost


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C until the body is done (submitting a job and recording its id)."""
    received: list[Any] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def headline(run_dir: Path) -> str:
    """'fid=12.3' from result.json, or the failure's message from error.json."""
    result = read_json(run_dir / RESULT_FILE)
    if result is not None:
        values = result.get("metrics") or {}
        for key in HEADLINE_METRICS:
            if isinstance(values.get(key), int | float):
                return f"{key}={values[key]:.4g}"
        return ""
    error = read_json(run_dir / ERROR_FILE)
    return f"{error.get('stage')}: {error.get('message')}" if error else ""


def row(trial_id: str, run_dir: Path, job_state: str | None, job_id: str | None) -> Row:
    """A display row from a run directory and the state of its job."""
    progress = Progress.of(run_dir)
    if progress.outcome == DONE or (progress.outcome != NEW and job_state in (None, ex.ENDED)):
        state = progress.outcome  # (a failed trial whose job was requeued is not final)
    elif job_state == RUNNING or (job_state is None and progress.train_state == "running"
                                  and trial_lock_held(run_dir)):
        state = RUNNING
    else:
        state = PENDING
    evaluating = state == RUNNING and progress.train_state == "done"
    return Row(trial_id, state, progress.iteration, progress.total,
               progress.it_per_s if state == RUNNING and not evaluating else None,
               progress.eta_s if state == RUNNING and not evaluating else None, job_id,
               "evaluating" if evaluating else headline(run_dir))


class GridRun:
    """The trials of one grid sweep invocation and their jobs."""

    def __init__(self, sweep: Sweep, trials: list[Trial], sweep_dir: SweepDir,
                 executor: ex.Executor, display: Display, options: Options):
        self.sweep, self.trials, self.dir = sweep, trials, sweep_dir
        self.executor, self.display, self.options = executor, display, options
        self.state = sweep_dir.read_state()
        self.jobs: dict[str, dict[str, Any]] = self.state["trials"]  # trial id -> job record
        self.job_states: dict[str, str] = {}  # trial id -> pending/running/ended
        self.lost_seen: dict[str, float] = {}  # trial id -> when its job was first seen ended

    def job(self, trial: Trial) -> TrialJob:
        """The callable that runs a trial."""
        return TrialJob(self.dir.run_dir(trial.trial_id), config_to_dict(trial.config),
                        trial.trial_id)

    def rows(self) -> list[Row]:
        """The display rows of every trial."""
        return [row(t.trial_id, self.dir.run_dir(t.trial_id), self.job_states.get(t.trial_id),
                    self.jobs.get(t.trial_id, {}).get("job_id")) for t in self.trials]

    def _record(self, trial_id: str, job_id: str) -> None:
        previous = self.jobs.get(trial_id, {})
        self.jobs[trial_id] = {"job_id": job_id, "executor": self.executor.name,
                               "submitted": time.time(),
                               "attempts": previous.get("attempts", 0) + 1}
        self.job_states[trial_id] = PENDING

    def _save(self) -> None:
        self.dir.write_state(self.state)

    def prepare(self) -> list[Trial]:
        """Write trial.json files, find live jobs; the trials that need a new job, seed by seed
        (every arm at the first seed, then at the second, ...) so that a sweep stopped early
        leaves its arms paired at the same seeds."""
        todo = []
        for trial in self.trials:
            run_dir = self.dir.write_trial(trial.record(self.sweep.name))
            outcome = Progress.of(run_dir).outcome
            if outcome == DONE:
                continue
            record = self.jobs.get(trial.trial_id)
            if record:  # a job still alive (even one that failed once and was requeued)
                state = ex.job_states(record["executor"], [record["job_id"]])[record["job_id"]]
                if state != ex.ENDED:
                    self.job_states[trial.trial_id] = state
                    log.info("%s: re-attached to %s job %s", trial.trial_id,
                             record["executor"], record["job_id"])
                    continue
            if outcome == FAILED and self.options.retry_failed:
                clear_error(run_dir)
                outcome = NEW
            if outcome != NEW:
                continue
            if trial_lock_held(run_dir):
                log.info("%s: another process is working on it; waiting", trial.trial_id)
                self.job_states[trial.trial_id] = RUNNING
                continue
            todo.append(trial)
        seeds = self.sweep.spec.seeds
        return sorted(todo, key=lambda trial: seeds.index(trial.seed))

    def run(self) -> dict[str, str]:
        """Run every trial to an outcome; trial id -> done/failed (or new if interrupted)."""
        todo = self.prepare()
        self._save()
        if self.executor.name != "slurm":  # SLURM jobs prepare data on the cluster
            prepare_data(todo)
        if self.executor.in_process:
            self._run_in_process(todo)
        else:
            self._run_jobs(todo)
        self.display.finish(self.rows())
        return {t.trial_id: Progress.of(self.dir.run_dir(t.trial_id)).outcome
                for t in self.trials}

    def _run_in_process(self, todo: list[Trial]) -> None:
        assert isinstance(self.executor, ex.InProcessExecutor)
        with self.display.follow(self.rows):
            self._wait()  # jobs of another driver or executor still running
            for trial in todo:
                run_dir = self.dir.run_dir(trial.trial_id)
                self._record(trial.trial_id, f"pid{os.getpid()}")
                self.job_states[trial.trial_id] = RUNNING
                self._save()
                try:
                    self.executor.run(self.job(trial), run_dir / ex.TRIAL_LOG)
                except Exception as error:  # noqa: BLE001 - recorded; the sweep goes on
                    if Progress.of(run_dir).outcome == NEW:
                        write_error(run_dir, trial.trial_id, "train",
                                    f"{type(error).__name__}: {error}")
                    log.warning("%s failed: %s (log: %s)", trial.trial_id, error,
                                run_dir / ex.TRIAL_LOG)
                self.job_states[trial.trial_id] = ex.ENDED

    def _run_jobs(self, todo: list[Trial]) -> None:
        # SLURM throttles a job array itself (array parallelism); local processes we throttle.
        throttled = self.executor.name != "slurm"
        limit = self.options.max_parallel or os.cpu_count() or 1
        queue = list(todo)
        while True:
            active = sum(s in (PENDING, RUNNING) for s in self.job_states.values())
            free = limit - active if throttled else len(queue)
            if queue and free > 0:
                batch, queue = queue[:free], queue[free:]
                with deferred_interrupts():
                    job_ids = self.executor.submit([self.job(t) for t in batch])
                    for trial, job_id in zip(batch, job_ids, strict=True):
                        self._record(trial.trial_id, job_id)
                    self._save()
                log.info("submitted %d trial(s): %s", len(batch), ", ".join(job_ids))
            self._poll()
            self.display.update(self.rows())
            if not queue and not any(s in (PENDING, RUNNING) for s in self.job_states.values()):
                return
            time.sleep(self.options.poll_s)

    def _wait(self) -> None:
        while any(s in (PENDING, RUNNING) for s in self.job_states.values()):
            self._poll()
            time.sleep(self.options.poll_s)

    def _poll(self) -> None:
        """Update job states; a job that ended without result or error is a lost trial."""
        by_kind: dict[str, list[str]] = {}
        for trial_id, state in self.job_states.items():
            record = self.jobs.get(trial_id)
            if state in (PENDING, RUNNING) and record:
                by_kind.setdefault(record["executor"], []).append(record["job_id"])
        states: dict[str, str] = {}
        for kind, job_ids in by_kind.items():
            states.update(ex.job_states(kind, job_ids) if kind != self.executor.name
                          else self.executor.states(job_ids))
        for trial_id, state in list(self.job_states.items()):
            run_dir = self.dir.run_dir(trial_id)
            if state not in (PENDING, RUNNING):
                continue
            outcome = Progress.of(run_dir).outcome
            record = self.jobs.get(trial_id)
            new_state = states.get(record["job_id"], ex.ENDED) if record else ex.ENDED
            if outcome == DONE or (outcome != NEW and new_state == ex.ENDED):
                self.job_states[trial_id] = ex.ENDED  # final: its job will not run again
                continue
            if new_state != ex.ENDED or trial_lock_held(run_dir):
                self.job_states[trial_id] = new_state if new_state != ex.ENDED else RUNNING
                self.lost_seen.pop(trial_id, None)
                continue
            first_seen = self.lost_seen.setdefault(trial_id, time.monotonic())
            if time.monotonic() - first_seen >= self.options.lost_after_s:
                self._lost(trial_id, run_dir, record)

    def _lost(self, trial_id: str, run_dir: Path, record: dict[str, Any] | None) -> None:
        progress = Progress.of(run_dir)
        stage = "eval" if progress.train_state == "done" else "train"
        where = ex.job_log(record["executor"], self.dir.path, record["job_id"], run_dir) \
            if record else run_dir
        job = f"{record['executor']} job {record['job_id']}" if record else "its job"
        write_error(run_dir, trial_id, stage,
                    f"{job} ended without a result (log: {where}); run again with "
                    "--retry-failed to resume it from its last checkpoint")
        self.job_states[trial_id] = ex.ENDED


def prepare_data(trials: list[Trial]) -> None:
    """Generate (or prepare) each dataset the trials train on, once, before they start."""
    from harness.data.loading import prepared_dataset_dir

    seen = set()
    for trial in trials:
        data, resolution = trial.config.data, trial.config.model.resolution
        key = (data.model_dump_json(exclude={"workers"}), resolution)
        if key not in seen:
            seen.add(key)
            log.info("data: %s at %dx%d (prepared on first use, then cached)", data.source,
                     resolution, resolution)
            prepared_dataset_dir(data, resolution)


def result_rows(sweep_dir: SweepDir, trial_ids: list[str]) -> list[dict[str, Any]]:
    """One flat row per trial with its variant, seed, outcome and metrics (for a table)."""
    out = []
    for trial_id in trial_ids:
        run_dir = sweep_dir.run_dir(trial_id)
        trial = read_json(run_dir / "trial.json") or {}
        result = read_json(run_dir / RESULT_FILE) or {}
        out.append({"trial": trial_id, "variant": trial.get("variant"),
                    "seed": trial.get("seed"), "outcome": Progress.of(run_dir).outcome,
                    **{k: v for k, v in (result.get("metrics") or {}).items()
                       if k in RESULT_COLUMNS}})
    return out

