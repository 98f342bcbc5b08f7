"""Where a sweep's results come from (run directories, the W&B API, W&B offline run files),
normalised into the same pandas frames so that every source gives the same tables.

The normalised `trials` frame has one row per trial, sorted by trial id, with the columns
`trial_id, variant, status ("done" | "failed" | "incomplete"), stage (failed stage),
message, run_dir, run_ids`, the trial's flattened resolved config as `config.<dotted key>`
and its evaluation metrics (contract 1, metrics.json) as `metrics.<key>`. `samples` holds the
per-sample disentanglement rows (eval/disentangle.csv) and `history` the training log
(metrics.jsonl) of every trial, each with a `trial_id` column.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness.config import flatten
from harness.errors import UserError
from harness.metrics.disentangle import DISENTANGLE_COLUMNS
from harness.report.wandb_runs import read_api_runs
from harness.wandb_offline import LoggedRun, read_offline_runs

log = logging.getLogger(__name__)

SOURCES = ("local", "wandb", "wandb-offline")
TRIAL_COLUMNS = ["trial_id", "variant", "status", "stage", "message", "run_dir", "run_ids"]


@dataclass
class Trial:
    """One trial as any source sees it, before normalisation."""

    trial_id: str
    status: str  # "done" | "failed" | "incomplete"
    config: dict[str, Any]  # flattened resolved config (dotted keys)
    metrics: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    stage: str | None = None  # "train" | "eval" when failed
    message: str | None = None
    samples: pd.DataFrame | None = None  # per-sample disentanglement rows
    history: list[dict[str, Any]] = field(default_factory=list)  # training log rows
    run_dir: Path | None = None  # local run directory (checkpoints for figures)
    run_ids: dict[str, str] = field(default_factory=dict)  # W&B job type -> run id


@dataclass
class SweepData:
    """A sweep's normalised results and what the sweep file asks the report for."""

    name: str
    source: str  # where the data came from, for the provenance index
    trials: pd.DataFrame
    samples: pd.DataFrame
    history: pd.DataFrame
    report: dict[str, Any]  # the sweep file's `report:` section ({} when absent)
    reference: str | None = None  # the variant other arms are compared with (sweep file)
    # trials of the noise-floor sweep measured at this sweep's preset, model and budget (the
    # `trials` frame's columns), or None; `noise_floor_source` says which sweep or why none
    noise_floor: pd.DataFrame | None = None
    noise_floor_source: str = ""


def cell(row: pd.Series, key: str) -> Any:
    """`row[key]`, or None when the column is absent or the value missing (NaN)."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def number(value: Any) -> float | None:
    """A number (Python or numpy; not bool, not NaN) as float; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    return None if math.isnan(float(value)) else float(value)


def normalise(name: str, source: str, trials: list[Trial], report: dict[str, Any],
              reference: str | None = None) -> SweepData:
    """The one normalisation step every source goes through."""
    trials = sorted(trials, key=lambda trial: trial.trial_id)
    rows, samples, history = [], [], []
    for trial in trials:
        rows.append({
            "trial_id": trial.trial_id, "variant": trial.variant, "status": trial.status,
            "stage": trial.stage, "message": trial.message,
            "run_dir": str(trial.run_dir) if trial.run_dir else None,
            "run_ids": ", ".join(f"{job}={rid}" for job, rid in sorted(trial.run_ids.items())),
            **{f"config.{k}": v for k, v in sorted(trial.config.items())},
            **{f"metrics.{k}": v for k, v in sorted(trial.metrics.items())},
        })
        if trial.samples is not None and tuple(trial.samples.columns) == DISENTANGLE_COLUMNS:
            samples.append(trial.samples.assign(trial_id=trial.trial_id))
        steps = [{k: (v if k == "iteration" else float(v)) for k, v in step.items()
                  if k == "iteration" or ("/" in k and isinstance(v, int | float)
                                          and not isinstance(v, bool))}
                 for step in trial.history]  # W&B writes 3.0 as 3: curves are floats
        steps = [step for step in steps if "iteration" in step and len(step) > 1]
        if steps:
            history.append(pd.DataFrame(steps).assign(trial_id=trial.trial_id))
    frame = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    extra = sorted(column for column in frame.columns if column not in TRIAL_COLUMNS)
    frame = frame[TRIAL_COLUMNS + extra]
    sample_frame = (pd.concat(samples, ignore_index=True) if samples
                    else pd.DataFrame(columns=[*DISENTANGLE_COLUMNS, "trial_id"]))
    history_frame = (pd.concat(history, ignore_index=True) if history
                     else pd.DataFrame(columns=["iteration", "trial_id"]))
    return SweepData(name, source, frame, sample_frame, history_frame, report, reference)


# ---- local run directories (contract 2) ------------------------------------------------------

def _read_json(path: Path) -> Any:
    """A JSON file's content; None when missing or unreadable (a warning names it)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        log.warning("%s: unreadable JSON (%s); treated as missing", path, error)
        return None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: invalid YAML ({error.__class__.__name__}); fix or delete "
                        "the file") from None


def _read_history(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipped a torn line", path)
    return rows


def _config_of_trial(info: dict[str, Any]) -> dict[str, Any]:
    """A trial that failed before training wrote config.yaml: its config resolved from
    trial.json (model, preset, overrides), or just those keys if they do not resolve."""
    from harness.config import config_to_dict, resolve_config

    overrides = info.get("overrides") or {}
    try:
        return flatten(config_to_dict(resolve_config(
            {"model": {"name": info.get("model") or "3dssgan"}}, "trial.json",
            info.get("preset"), [f"{k}={json.dumps(v)}" for k, v in overrides.items()])))
    except UserError:
        return {"model.name": info.get("model"), "preset": info.get("preset"), **overrides}


def _local_trial(run_dir: Path) -> Trial:
    info = _read_json(run_dir / "trial.json") or {}
    resolved = _read_yaml(run_dir / "config.yaml")
    config = flatten(resolved) if isinstance(resolved, dict) else _config_of_trial(info)
    result, error = _read_json(run_dir / "result.json"), _read_json(run_dir / "error.json")
    metrics = _read_json(run_dir / "metrics.json") or (result or {}).get("metrics") or {}
    if result and result.get("status") == "done":
        status, stage, message = "done", None, None
    elif error:
        status, stage, message = "failed", error.get("stage"), error.get("message")
    else:
        status, stage, message = "incomplete", None, None
    csv = run_dir / "eval" / "disentangle.csv"
    # the python engine parses floats with float(): exact, whatever the pandas version
    samples = pd.read_csv(csv, engine="python") if csv.is_file() else None
    run_ids = {}
    for path in sorted(run_dir.glob("wandb_run_id*")):
        job = path.name.partition(".")[2] or "train"
        run_ids[job] = path.read_text().strip()
    return Trial(
        trial_id=str(info.get("trial_id") or run_dir.name), status=status, config=config,
        metrics=metrics, variant=info.get("variant"), stage=stage, message=message,
        samples=samples, history=_read_history(run_dir / "metrics.jsonl"), run_dir=run_dir,
        run_ids=run_ids)


def _is_trial_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "trial.json").is_file() or (path / "config.yaml").is_file())


def _is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "sweep.yaml").is_file()
                              or any(_is_trial_dir(child) for child in path.iterdir()))


def _check_runs_dir(runs_dir: Path) -> None:
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no runs directory; run a sweep first (python -m "
                        "harness.sweep SWEEP.yaml) or pass --runs-dir")


def local_sweeps(runs_dir: Path) -> list[str]:
    """Names of the sweeps under `runs_dir`."""
    _check_runs_dir(runs_dir)
    return sorted(path.name for path in runs_dir.iterdir() if _is_sweep_dir(path))


def report_section(sweep_dir: Path) -> dict[str, Any]:
    """The `report:` section of a sweep's resolved spec (sweep.yaml), or {}."""
    spec = _read_yaml(sweep_dir / "sweep.yaml")
    section = spec.get("report") if isinstance(spec, dict) else None
    if section is not None and not isinstance(section, dict):
        raise UserError(f"{sweep_dir / 'sweep.yaml'}: report must be a mapping with tables: "
                        "and figures: lists")
    return section or {}


def reference_variant(sweep_dir: Path) -> str | None:
    """The variant a sweep's report compares the others with (sweep.yaml's `reference`, else
    its first variant), or None."""
    spec = _read_yaml(sweep_dir / "sweep.yaml")
    if not isinstance(spec, dict):
        return None
    variants = (spec.get("grid") or {}).get("variants") or []
    first = variants[0].get("name") if variants and isinstance(variants[0], dict) else None
    return spec.get("reference") or first


def load_local(sweep: str, runs_dir: Path) -> SweepData:
    """A sweep's trials from `runs_dir/<sweep>/<trial>/` (no network)."""
    sweep_dir = runs_dir / sweep
    if not _is_sweep_dir(sweep_dir):
        known = local_sweeps(runs_dir)
        raise UserError(f"{sweep_dir}: no such sweep; sweeps in {runs_dir}: "
                        f"{', '.join(known) or 'none'}")
    trials = [_local_trial(path) for path in sorted(sweep_dir.iterdir()) if _is_trial_dir(path)]
    return normalise(sweep, f"local ({sweep_dir})", trials, report_section(sweep_dir),
                     reference_variant(sweep_dir))


# ---- W&B (API or offline files) --------------------------------------------------------------

def _trial_of(run: LoggedRun) -> str:
    """The trial id of a run: harness.tracking names a trial's runs `<trial>` (train) and
    `<trial>-<job type>` (eval, ...)."""
    if run.job_type in ("", "train"):
        return run.name
    return run.name.removesuffix(f"-{run.job_type}")


def _flat_config(run: LoggedRun) -> dict[str, Any]:
    return flatten({k: v for k, v in run.config.items() if not k.startswith("_")})


def _eval_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's keys from an eval run's summary (harness.evaluate logs them as
    `eval/<key>`); media and tables (dicts) and W&B's own `_` keys are dropped."""
    scalars = {k: v for k, v in summary.items() if not k.startswith("_")
               and not isinstance(v, dict)}
    if any(k.startswith("eval/") for k in scalars):
        return {k.removeprefix("eval/"): v for k, v in scalars.items() if k.startswith("eval/")}
    return scalars


def _wandb_trial(trial_id: str, jobs: dict[str, LoggedRun]) -> Trial:
    train, evaluation = jobs.get("train"), jobs.get("eval")
    config = _flat_config(train or evaluation)  # type: ignore[arg-type]
    metrics = {} if evaluation is None else _eval_metrics(evaluation.summary)
    if train is not None and train.state == "failed":
        status, stage = "failed", "train"
    elif evaluation is not None and evaluation.state == "failed":
        status, stage = "failed", "eval"
    elif evaluation is not None and evaluation.state == "finished":
        status, stage = "done", None
    else:
        status, stage = "incomplete", None
    samples = None
    for table in (evaluation.tables.values() if evaluation else []):
        if tuple(table.columns) == DISENTANGLE_COLUMNS:
            samples = table
    return Trial(trial_id=trial_id, status=status, config=config, metrics=metrics, stage=stage,
                 samples=samples, history=train.history if train else [],
                 run_ids={job: run.run_id for job, run in jobs.items()})


def _from_wandb(sweep: str, source: str, runs: list[LoggedRun], runs_dir: Path) -> SweepData:
    by_trial: dict[str, dict[str, LoggedRun]] = {}
    for run in runs:
        if run.group == sweep and run.job_type in ("", "train", "eval"):
            by_trial.setdefault(_trial_of(run), {})[run.job_type or "train"] = run
    if not by_trial:
        known = sorted({run.group for run in runs if run.group})
        raise UserError(f"{source}: no W&B runs in group {sweep!r}; groups found: "
                        f"{', '.join(known) or 'none'}")
    trials = []
    for trial_id, jobs in by_trial.items():
        trial = _wandb_trial(trial_id, jobs)
        local = runs_dir / sweep / trial_id
        if local.is_dir():  # checkpoints for figures, and the trial's label
            trial.run_dir = local
            trial.variant = (_read_json(local / "trial.json") or {}).get("variant")
        trials.append(trial)
    local = runs_dir / sweep
    report = report_section(local) if local.is_dir() else {}
    return normalise(sweep, source, trials, report,
                     reference_variant(local) if local.is_dir() else None)


def wandb_groups(runs: list[LoggedRun]) -> list[str]:
    """Names of the sweeps (W&B groups) that have trial runs."""
    return sorted({run.group for run in runs if run.group and run.job_type in ("", "train")})


def load_runs(source: str, source_path: str | None, group: str | None) -> list[LoggedRun]:
    """The W&B runs of a W&B source (the API, or offline run files under `source_path`)."""
    if source == "wandb":
        return read_api_runs(source_path, group)
    if source_path is None or not Path(source_path).is_dir():
        raise UserError(f"--source wandb-offline {source_path}: no such directory; give the "
                        "folder holding W&B offline runs (e.g. runs/SWEEP)")
    runs = read_offline_runs(Path(source_path))
    if not runs:
        raise UserError(f"{source_path}: no W&B offline runs (offline-run-*/run-*.wandb) "
                        "found; runs log offline with --wandb and WANDB_MODE=offline")
    return runs


def load_sweep(
    sweep: str,
    source: str = "local",
    runs_dir: str | Path = "runs",
    source_path: str | None = None,
    runs: list[LoggedRun] | None = None,
) -> SweepData:
    """One sweep's normalised results from `source` ("local", "wandb", "wandb-offline").

    `runs` reuses W&B runs already read (one read for several sweeps).
    """
    runs_dir = Path(runs_dir)
    if source == "local":
        data = load_local(sweep, runs_dir)
    elif source not in SOURCES:
        raise UserError(f"--source {source}: unknown; choose one of {', '.join(SOURCES)}")
    else:
        where = "W&B API" if source == "wandb" else f"W&B offline runs in {source_path}"
        runs = runs if runs is not None else load_runs(source, source_path, sweep)
        data = _from_wandb(sweep, where, runs, runs_dir)
    attach_noise_floor(data, runs_dir)
    return data


NOISE_FLOOR_SWEEP = "noise_floor"  # sweeps/noise_floor.yaml: one config at several seeds
# What must agree for a noise floor to stand for a sweep's spread: the same model at the same
# preset, data, resolution and training budget.
NOISE_FLOOR_MATCH = ("preset", "model.name", "model.resolution", "data.source",
                     "train.iterations", "train.batch_size")


def machines_by_trial(trials: pd.DataFrame) -> list[set[str]]:
    """The machines that trained each of `trials` that recorded them (its evaluation's
    `machine/train`, else the evaluating `machine`)."""
    trained = pd.Series(None, index=trials.index, dtype=object)
    for key in ("metrics.machine/train", "metrics.machine"):  # the evaluating one: a fallback
        if key in trials:
            trained = trained.fillna(trials[key])
    return [set(str(value).split("; ")) for value in trained.dropna()]


def trial_machines(trials: pd.DataFrame) -> set[str]:
    """Every machine that trained one of `trials`; empty when none was recorded."""
    return set().union(*machines_by_trial(trials))


def attach_noise_floor(data: SweepData, runs_dir: Path) -> None:
    """Give `data` the done trials of runs_dir/noise_floor that match its setting (or say why
    there are none), so its report can quote the seed-to-seed spread."""
    if data.name == NOISE_FLOOR_SWEEP:
        return
    where = runs_dir / NOISE_FLOOR_SWEEP
    if not _is_sweep_dir(where):
        data.noise_floor_source = (f"no noise floor measured (no sweep {NOISE_FLOOR_SWEEP} in "
                                   "the runs directory: python -m harness.sweep "
                                   "sweeps/noise_floor.yaml)")
        return
    floor = load_local(NOISE_FLOOR_SWEEP, runs_dir).trials
    floor = floor[floor["status"] == "done"]

    def setting(frame: pd.DataFrame) -> set[tuple[Any, ...]]:
        columns = [f"config.{key}" for key in NOISE_FLOOR_MATCH]
        if frame.empty or any(column not in frame for column in columns):
            return set()
        return set(frame[columns].itertuples(index=False, name=None))

    ours, theirs = setting(data.trials), setting(floor)
    if len(ours) == 1 and ours == theirs:
        data.noise_floor = floor
        data.noise_floor_source = f"sweep {NOISE_FLOOR_SWEEP}, {len(floor)} seeds"
        here, there = trial_machines(data.trials), trial_machines(floor)
        # Quoted across machines (another machine behaves like other seeds: docs/statistics.md)
        if here and there and here != there:
            data.noise_floor_source += (
                f", trained on {'; '.join(sorted(there))} (this sweep: "
                f"{'; '.join(sorted(here))})")
    else:
        shown = ", ".join(f"{key}={value}" for key, value in
                          zip(NOISE_FLOOR_MATCH, sorted(theirs)[0], strict=True)) if theirs else ""
        data.noise_floor_source = (f"no noise floor at this setting (sweep {NOISE_FLOOR_SWEEP} "
                                   "holds "
                                   f"{shown or 'no finished trials'}; it must match in "
                                   f"{', '.join(NOISE_FLOOR_MATCH)})")
