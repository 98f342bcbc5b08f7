"""Optuna searches: the study, its workers (in-process, local processes or SLURM jobs), and
the driver that keeps them going until the budget is spent.

Storage: a journal file in the sweep directory (`optuna.journal`) unless the sweep or
--storage names an RDB URL (e.g. postgresql://...) or another journal path. The driver
creates the study before any worker starts. Each worker asks for a point under a file lock in
the sweep directory, so two workers never draw the same grid point (GridSampler alone repeats
points under parallel workers), and stops when the budget is taken. A point is one trial
(same id, run directory and result.json as a grid trial); a point drawn twice reuses the
first one's run directory rather than training twice.

A worker that is requeued (preemption, time limit) continues its unfinished trial from the
trial's checkpoint. Trials left RUNNING by a worker whose job is gone are marked FAIL and
enqueued again when the driver starts (or after its workers end); their run directories
resume from the last checkpoint. With `pruning`, training stops `pruning.evaluations` times,
evenly spaced, for an evaluation of the objective that is reported to the pruner.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import submitit
from filelock import FileLock

from harness.config import read_yaml
from harness.errors import UserError
from harness.launch import executors as ex
from harness.launch.display import PENDING, RUNNING, Display, Row
from harness.launch.spec import Search, Sweep, metric_group
from harness.launch.state import (
    ERROR_FILE,
    RESULT_FILE,
    SPEC_FILE,
    Progress,
    SweepDir,
    clear_error,
    read_json,
)
from harness.launch.trial import (
    BUSY,
    TRIAL_LOCK,
    Pruned,
    close_wandb_run,
    job_logging,
    run_trial,
)

log = logging.getLogger(__name__)

JOURNAL_FILE = "optuna.journal"
ASK_LOCK = ".optuna-ask.lock"
WORKERS_DIR = "workers"  # <key>.json: the optuna trial a worker is running
# Sweep settings a search directory must keep (its study and trials depend on them).
FIXED_KEYS = ("model", "preset", "data", "seeds", "overrides")
FIXED_SEARCH_KEYS = ("sampler", "objective", "space")


def storage(sweep_dir: Path, url: str | None) -> Any:
    """An Optuna storage: an RDB URL as is, else a journal file (default in the sweep dir)."""
    import optuna

    if url and "://" in url:
        return optuna.storages.RDBStorage(url)
    path = Path(url) if url else sweep_dir / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # optuna >= 4.0
        from optuna.storages.journal import JournalFileBackend as FileBackend
    except ImportError:  # optuna 3.x
        from optuna.storages import JournalFileStorage as FileBackend
    return optuna.storages.JournalStorage(FileBackend(str(path)))


def _sampler(search: Search) -> Any:
    import optuna

    if search.sampler == "grid":
        return optuna.samplers.GridSampler(
            {key: list(param.choices or []) for key, param in search.space.items()},
            seed=search.sampler_seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.sampler_seed)
    return optuna.samplers.TPESampler(seed=search.sampler_seed)


def _pruner(search: Search) -> Any:
    import optuna

    pruning = search.pruning
    if pruning is None:
        return optuna.pruners.NopPruner()
    if pruning.pruner == "percentile":
        return optuna.pruners.PercentilePruner(pruning.percentile,
                                               n_startup_trials=pruning.startup_trials)
    return optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials)


def open_study(sweep: Sweep, sweep_dir: Path, url: str | None) -> Any:
    """The sweep's study (created on first use)."""
    import optuna

    search = sweep.spec.search
    assert search is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=sweep.name, storage=storage(sweep_dir, url), sampler=_sampler(search),
        pruner=_pruner(search), direction=search.objective.direction, load_if_exists=True)


def suggest(trial: Any, search: Search) -> dict[str, Any]:
    """Draw (or read back) a point of the search space: dotted key -> value."""
    values: dict[str, Any] = {}
    for key, param in search.space.items():
        if param.type == "categorical":
            values[key] = trial.suggest_categorical(key, param.choices)
        elif param.type == "int":
            values[key] = trial.suggest_int(key, int(param.low), int(param.high),  # type: ignore[arg-type]
                                            step=int(param.step or 1), log=param.log)
        else:
            values[key] = trial.suggest_float(key, param.low, param.high, step=param.step,
                                              log=param.log)
    return values


def label(values: dict[str, Any]) -> str:
    """A short human label of a point: 'lr=0.002 alpha=1.5'."""
    def text(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return " ".join(f"{key.split('.')[-1]}={text(value)}" for key, value in values.items())


def budget_used(trials: list[Any]) -> int:
    """Trials that count against the budget: finished or running, less failures retried."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:
        return f"pid{os.getpid()}"


class SearchWorker(submitit.helpers.Checkpointable):
    """Runs trials of the study until its budget is taken; requeued, it first finishes the
    trial it had started (resuming its training from the run directory)."""

    def __init__(self, sweep: Sweep, sweep_dir: str | Path, url: str | None, key: str,
                 executor: str):
        self.sweep = sweep
        self.sweep_dir = str(Path(sweep_dir).resolve())
        self.url = url
        self.key = key  # stable over requeues: names workers/<key>.json
        self.executor = executor

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this worker as it is; its unfinished trial resumes from its checkpoint."""
        close_wandb_run()
        return super().checkpoint(*args, **kwargs)

    def __call__(self) -> int:
        job_logging()
        study = open_study(self.sweep, Path(self.sweep_dir), self.url)
        finished = 0
        while (claimed := self._claim(study)) is not None:
            self._evaluate(study, *claimed)
            finished += 1
        return finished

    @property
    def _own_file(self) -> Path:
        return Path(self.sweep_dir) / WORKERS_DIR / f"{self.key}.json"

    def _claim(self, study: Any) -> tuple[Any, Any] | None:
        """The next (optuna trial, harness trial) under the ask lock, or None when done."""
        import optuna
        from optuna.trial import TrialState

        from harness.io import atomic_write_json

        search = self.sweep.spec.search
        assert search is not None
        with FileLock(Path(self.sweep_dir) / ASK_LOCK):
            trials = study.get_trials(deepcopy=False)
            own = read_json(self._own_file)
            mine = [t for t in trials if own and t.number == own.get("number")
                    and t.state == TrialState.RUNNING]
            if mine:
                trial = optuna.trial.Trial(study, mine[0]._trial_id)
                log.info("worker %s: continuing trial %d", self.key, trial.number)
            else:
                waiting = any(t.state == TrialState.WAITING for t in trials)
                if not waiting and budget_used(trials) >= search.budget():
                    return None
                trial = study.ask()
                _keep_grid_id(study, trial, trials, search)
            values = suggest(trial, search)
            point = self.sweep.trial("opt", values, self.sweep.spec.seeds[0], "search.space")
            trial.set_user_attr("trial_id", point.trial_id)
            trial.set_user_attr("job_id", _job_id())
            trial.set_user_attr("executor", self.executor)
            atomic_write_json(self._own_file, {"number": trial.number})
        return trial, point

    def _evaluate(self, study: Any, trial: Any, point: Any) -> None:
        """Train and evaluate one point; tell the study how it went."""
        from optuna.trial import TrialState

        search = self.sweep.spec.search
        assert search is not None
        sweep_dir = SweepDir(Path(self.sweep_dir).parent, self.sweep.name)
        record = {**point.record(self.sweep.name), "variant": label(trial.params)}
        run_dir = sweep_dir.write_trial(record)
        metric = search.objective.metric

        def on_stage(iteration: int) -> None:
            from harness.launch.trial import evaluate

            values = evaluate(run_dir, metrics=[metric_group(metric)], track=False)
            value = float(values[metric])
            trial.report(value, iteration)
            if trial.should_prune():
                raise Pruned(f"pruned at iteration {iteration}: {metric} = {value:.4g}")

        pruning = search.pruning
        try:
            every = pruning.every(point.config.train.iterations) if pruning else None
            result = run_trial(run_dir, point.config, point.trial_id, every,
                               on_stage if pruning else None)
            if result and result.get("status") == BUSY:  # the same point, drawn elsewhere
                with FileLock(run_dir / TRIAL_LOCK):
                    result = read_json(run_dir / RESULT_FILE)
            value = float(((result or {}).get("metrics") or {}).get(metric, math.nan))
            if not math.isfinite(value):
                raise RuntimeError(f"{run_dir}: no finite {metric} in its result")
            tell(study, trial, value)
        except Pruned as pruned:
            log.info("trial %d %s", trial.number, pruned)
            tell(study, trial, state=TrialState.PRUNED)
        except Exception as error:  # noqa: BLE001 - the trial fails, the worker goes on
            log.exception("trial %d (%s) failed: %s", trial.number, point.trial_id, error)
            tell(study, trial, state=TrialState.FAIL)
        finally:
            self._own_file.unlink(missing_ok=True)


def tell(study: Any, trial: Any, value: float | None = None, state: Any = None) -> None:
    """`study.tell` outside `study.optimize`: GridSampler's after_trial calls `study.stop()`,
    which raises there; optuna stores the trial's outcome before that (in a `finally`)."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def _keep_grid_id(study: Any, trial: Any, trials: list[Any], search: Search) -> None:
    """Give a retried grid point (an enqueued trial) its original grid id, which
    GridSampler needs once it is told the result."""
    retry_of = trial.user_attrs.get("retry_of") if hasattr(trial, "user_attrs") else None
    if search.sampler != "grid" or retry_of is None:
        return
    original = next((t for t in trials if t.number == retry_of), None)
    if original is None or "grid_id" not in original.system_attrs:
        return
    for name in ("grid_id", "search_space"):
        study._storage.set_trial_system_attr(trial._trial_id, name, original.system_attrs[name])


def recover(study: Any, sweep_dir: SweepDir, retry_failed: bool) -> int:
    """Mark trials of dead workers FAIL and enqueue them again (and, with `retry_failed`, every
    failed trial not yet retried); the number enqueued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    running = [t for t in trials if t.state == TrialState.RUNNING]
    by_kind: dict[str, list[str]] = {}
    for t in running:
        by_kind.setdefault(t.user_attrs.get("executor", "local"), []).append(
            t.user_attrs.get("job_id", ""))
    states = {(kind, job): state for kind, jobs in by_kind.items()
              for job, state in ex.job_states(kind, jobs).items()}
    again = []
    for t in running:
        if states.get((t.user_attrs.get("executor", "local"), t.user_attrs.get("job_id", ""))) \
                == ex.ENDED:
            log.warning("trial %d: its worker (%s job %s) is gone; marking it failed and "
                        "running it again", t.number, t.user_attrs.get("executor"),
                        t.user_attrs.get("job_id"))
            tell(study, t.number, state=TrialState.FAIL)
            again.append(t)
    if retry_failed:
        again += [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    for t in again:
        if "trial_id" in t.user_attrs:
            clear_error(sweep_dir.run_dir(t.user_attrs["trial_id"]))
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return len(again)


def rows(study: Any, sweep_dir: SweepDir, metric: str) -> list[Row]:
    """Display rows of the study's trials."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False):
        trial_id = t.user_attrs.get("trial_id") or f"#{t.number}"
        name = f"#{t.number} {trial_id}"
        progress = Progress.of(sweep_dir.run_dir(trial_id))
        if t.state == TrialState.RUNNING:
            evaluating = progress.train_state == "done"
            out.append(Row(name, RUNNING, progress.iteration, progress.total,
                           None if evaluating else progress.it_per_s,
                           None if evaluating else progress.eta_s, t.user_attrs.get("job_id"),
                           "evaluating" if evaluating else label(t.params)))
        elif t.state == TrialState.WAITING:
            note = f"retry of #{t.user_attrs['retry_of']}" if "retry_of" in t.user_attrs else ""
            out.append(Row(name, PENDING, note=note))
        elif t.state == TrialState.COMPLETE:
            out.append(Row(name, "done", progress.iteration, progress.total,
                           note=f"{metric}={t.value:.4g} {label(t.params)}"))
        else:
            error = read_json(sweep_dir.run_dir(trial_id) / ERROR_FILE) or {}
            state = "pruned" if t.state == TrialState.PRUNED else "failed"
            out.append(Row(name, state, progress.iteration, progress.total,
                           note=error.get("message", label(t.params))))
    return out


def check_same_search(sweep_dir: SweepDir, record: dict[str, Any]) -> None:
    """Refuse to continue a search directory with different settings."""
    path = sweep_dir.path / SPEC_FILE
    if not path.is_file():
        return
    old = read_yaml(path)
    changed = [key for key in FIXED_KEYS if old.get(key) != record.get(key)]
    changed += [f"search.{key}" for key in FIXED_SEARCH_KEYS
                if (old.get("search") or {}).get(key) != record["search"].get(key)]
    if changed:
        raise UserError(f"{sweep_dir.path} holds a search with another {changed[0]}; a search "
                        "directory keeps its settings: use another --runs-dir, or remove it")


def run_search(sweep: Sweep, sweep_dir: SweepDir, args: Any, options: Any,
               profile: str) -> bool | None:
    """Run (or continue) the sweep's search until its budget is spent; print the best trial.
    None for --dry-run; else whether every trial of the budget finished."""
    from optuna.trial import TrialState

    search = sweep.spec.search
    assert search is not None
    url = args.storage or search.storage
    if args.dry_run:
        print(f"search {sweep.name}: {search.sampler} sampler, {search.budget()} trials, "
              f"{search.objective.direction} {search.objective.metric}; preset "
              f"{sweep.spec.preset}, data {sweep.spec.data}; storage "
              f"{url or sweep_dir.path / JOURNAL_FILE}; executor {args.executor}")
        for key, param in search.space.items():
            print(f"  {key}: {param.model_dump(exclude_none=True, exclude_defaults=True)}")
        return None
    with sweep_dir.driver_lock():
        check_same_search(sweep_dir, sweep.record())
        sweep_dir.write_spec(sweep.record())
        executor, why = ex.make_executor(args.executor, sweep_dir.path, profile,
                                         sweep.spec.slurm.overrides, options.max_parallel,
                                         sweep.name)
        print(why, flush=True)
        study = open_study(sweep, sweep_dir.path, url)
        display = Display(f"search {sweep.name} ({executor.name}, {search.budget()} trials, "
                          f"{sweep_dir.path})")
        state = sweep_dir.read_state()
        workers: dict[str, dict[str, Any]] = state.setdefault("workers", {})
        retry_failed = options.retry_failed
        while True:
            recover(study, sweep_dir, retry_failed)
            retry_failed = False
            trials = study.get_trials(deepcopy=False)
            todo = search.budget() - budget_used(trials) + sum(
                t.state == TrialState.WAITING for t in trials)
            alive = _alive_workers(workers)
            if todo <= 0 and not alive:
                break
            finished_before = _finished(trials)
            wanted = min(options.max_parallel or 1, max(todo, 0))
            new = max(wanted - len(alive), 0) if not executor.in_process else min(wanted, 1)
            keys = [f"w{len(workers) + i}" for i in range(new)]
            jobs = [SearchWorker(sweep, sweep_dir.path, url, key, executor.name)
                    for key in keys]
            if executor.in_process:
                with display.follow(lambda: rows(study, sweep_dir, search.objective.metric)):
                    for key, job in zip(keys, jobs, strict=True):
                        workers[key] = {"job_id": f"pid{os.getpid()}", "executor": "local"}
                        sweep_dir.write_state(state)
                        executor.run(job, sweep_dir.path / WORKERS_DIR / f"{key}.log")
            else:
                if jobs:
                    job_ids = executor.submit(jobs)
                    for key, job_id in zip(keys, job_ids, strict=True):
                        workers[key] = {"job_id": job_id, "executor": executor.name,
                                        "submitted": time.time()}
                    sweep_dir.write_state(state)
                    log.info("started %d search worker(s): %s", len(jobs), ", ".join(job_ids))
                while _alive_workers(workers):
                    display.update(rows(study, sweep_dir, search.objective.metric))
                    time.sleep(options.poll_s)
            if _finished(study.get_trials(deepcopy=False)) == finished_before:
                break  # the workers made no progress: stop rather than loop
        final = rows(study, sweep_dir, search.objective.metric)
        display.finish(final)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        print(f"best: trial #{best.number} {best.user_attrs.get('trial_id')} "
              f"{search.objective.metric}={best.value:.4g} {label(best.params)}")
    done = _finished(trials)
    if done < search.budget():
        print(f"search incomplete: {done} of {search.budget()} trials finished; re-run the "
              "same command to continue (add --retry-failed to retry failed trials)")
    return done >= search.budget()


def _finished(trials: list[Any]) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def _alive_workers(workers: dict[str, dict[str, Any]]) -> list[str]:
    by_kind: dict[str, list[str]] = {}
    for record in workers.values():
        by_kind.setdefault(record["executor"], []).append(record["job_id"])
    alive = {(kind, job) for kind, jobs in by_kind.items()
             for job, state in ex.job_states(kind, jobs).items() if state != ex.ENDED}
    return [key for key, r in workers.items() if (r["executor"], r["job_id"]) in alive]
