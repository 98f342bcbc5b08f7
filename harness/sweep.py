"""Run a sweep: `python -m harness.sweep SWEEP.yaml [--preset P] [--data D] [--executor E]`.

Expands the sweep file into trials (each a validated config with a stable id), runs each
trial (train, evaluate, result.json) in this process, in local processes or as SLURM jobs,
shows their progress, and builds the sweep's report. Everything lives in RUNS/<sweep name>/;
to resume after a crash or Ctrl-C, run the same command again: finished trials are kept,
running SLURM jobs are re-attached, and only the missing trials are started.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli import make_parser, run_main
from harness.config import PRESET_NAMES
from harness.errors import UserError

if TYPE_CHECKING:
    from harness.launch.spec import Sweep

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m harness.sweep`."""
    parser = make_parser("python -m harness.sweep", __doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="sweep file, e.g. sweeps/ablation_lifting.yaml")
    parser.add_argument("--preset", choices=PRESET_NAMES,
                        help="scale preset of every trial (default: the sweep file's)")
    parser.add_argument("--data", metavar="synthetic|celebamask-hq=PATH",
                        help="dataset of every trial (default: the sweep file's)")
    parser.add_argument("--executor", default="auto",
                        choices=("local", "processes", "slurm", "auto"),
                        help="local: this process, one trial after another; processes: "
                             "parallel local processes; slurm: SLURM jobs via submitit; auto "
                             "(default): slurm when a cluster answers, else local")
    parser.add_argument("--profile", help="SLURM profile: a name in slurm/profiles/ or a YAML "
                                          "path (default: the sweep file's slurm.profile)")
    parser.add_argument("--max-parallel", type=int, metavar="N",
                        help="trials (search: workers) at once; SLURM: array parallelism")
    parser.add_argument("--only", action="append", metavar="TRIAL_ID",
                        help="run only this trial (repeatable); see --dry-run for the ids")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed trials again (they resume from their checkpoints)")
    parser.add_argument("--runs-dir", default="runs",
                        help="where sweep directories live (default: runs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key of every trial")
    parser.add_argument("--storage", help="search: Optuna storage, an RDB URL (e.g. "
                                          "postgresql://...) or a journal file path")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (trials, ids, what is done) and start nothing")
    parser.add_argument("--inception-weights", metavar="PATH",
                        help="FID on real data: torch-fidelity's Inception weights file")
    parser.add_argument("--arcface-onnx", metavar="PATH",
                        help="identity metric on real data: an insightface ArcFace .onnx file")
    parser.add_argument("--face-detector-onnx", metavar="PATH",
                        help="identity metric: align faces by an insightface SCRFD detector's "
                             "5 landmarks (e.g. buffalo_l's det_10g.onnx)")
    parser.add_argument("--reports-dir", default="reports",
                        help="where the report is built (default: reports)")
    parser.add_argument("--no-report", action="store_true", help="do not build the report")
    parser.add_argument("--poll", type=float, default=5.0, metavar="S",
                        help="seconds between job-state checks (default: 5)")
    return parser


def print_plan(sweep: Any, trials: list[Any], sweep_dir: Any, executor: str) -> None:
    """The plan as a table: trial id, variant, seed, what the run directory holds, settings."""
    import pandas as pd

    from harness.launch.state import Progress

    base = sweep.base_overrides()
    rows = [{"trial": t.trial_id, "variant": t.variant, "seed": t.seed,
             "status": Progress.of(sweep_dir.run_dir(t.trial_id)).outcome,
             "settings": " ".join(f"{k}={v}" for k, v in t.overrides.items()
                                  if base.get(k, object()) != v) or "-"} for t in trials]
    spec = sweep.spec
    print(f"sweep {spec.name}: {len(trials)} trial(s), model {spec.model}, preset "
          f"{spec.preset}, data {spec.data}, executor {executor}, in {sweep_dir.path}")
    print(pd.DataFrame(rows).to_string(index=False))


def print_results(rows: list[dict[str, Any]]) -> None:
    """A results table of the trials (pandas)."""
    import pandas as pd

    if rows:
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.4g}"))


def build_sweep_report(name: str, runs_dir: str, reports_dir: str) -> bool:
    """Build reports/<name>/ with harness.report (contract 3); False if it failed."""
    try:
        from harness.report import build_report
    except ImportError as error:
        print(f"report: harness.report is not available ({error}); results table above")
        return True
    try:
        paths = build_report([name], runs_dir=runs_dir, out_dir=reports_dir)
    except UserError as error:
        print(f"report: {error}")
        return False
    readme = next((p for p in paths if Path(p).name == "README.md"), None)
    print(f"report: {readme or ', '.join(str(p) for p in paths)}")
    return True


def main(args: argparse.Namespace) -> int:
    """Plan, run and report a sweep; exit code 1 if a trial failed."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        sys.stderr.write("stopped: finished trials are kept and SLURM jobs keep running; run "
                         "the same command again to resume\n")
        raise


def _preflight(sweep: Sweep) -> None:
    """Check the sweep's data folder and load the weight files its evaluation needs
    (Inception, ArcFace, the face detector) before anything is written or trained, so that a
    wrong path fails now, in one line, and not in every trial, hours later."""
    import torch

    from harness.data.loading import check_data
    from harness.launch.spec import expand
    from harness.metrics.suite import choose_models, parse_metrics

    spec = sweep.spec
    configs = [trial.config for trial in expand(sweep)] or [  # a search: its base config
        sweep.trial("overrides", {}, spec.seeds[0], "overrides").config]
    seen = set()
    for config in configs:
        key = (config.data.model_dump_json(), config.model.resolution,
               config.evaluate.model_dump_json())
        if key not in seen:
            seen.add(key)
            check_data(config.data, config.model.resolution)
            choose_models(config, parse_metrics(config.evaluate.metrics), torch.device("cpu"))


def _run(args: argparse.Namespace) -> int:
    from harness.launch.driver import GridRun, Options, result_rows
    from harness.launch.executors import make_executor
    from harness.launch.spec import expand, load_sweep
    from harness.launch.state import DONE, SweepDir

    if args.max_parallel is not None and args.max_parallel < 1:
        raise UserError("--max-parallel must be at least 1")
    sweep = load_sweep(args.sweep, args.preset, args.data, args.overrides)
    weights = {key: value for key, value in (("inception_weights", args.inception_weights),
                                             ("arcface_onnx", args.arcface_onnx),
                                             ("face_detector_onnx", args.face_detector_onnx))
               if value}
    if weights:
        sweep = replace(sweep, spec=sweep.spec.model_copy(update=weights))
    _preflight(sweep)
    sweep_dir = SweepDir(args.runs_dir, sweep.name)
    options = Options(args.max_parallel, args.retry_failed, args.poll)
    profile = args.profile or sweep.spec.slurm.profile
    if args.executor in ("slurm", "auto"):  # a wrong profile fails before anything is written
        from harness.launch.slurm import load_profile

        load_profile(profile, sweep.spec.slurm.overrides)
    if sweep.spec.search is not None:
        from harness.launch.search import run_search

        if args.only:
            raise UserError("--only selects trials of a grid; a search has no fixed trials")
        outcome = run_search(sweep, sweep_dir, args, options, profile)
        if outcome is None:
            return 0
        ok = outcome
    else:
        trials = expand(sweep)
        ids = [t.trial_id for t in trials]
        unknown = sorted(set(args.only or []) - set(ids))
        if unknown:
            raise UserError(f"--only {unknown[0]}: not a trial of {args.sweep}; the ids are "
                            f"{', '.join(ids)}")
        selected = [t for t in trials if not args.only or t.trial_id in args.only]
        if args.dry_run:
            print_plan(sweep, selected, sweep_dir, args.executor)
            return 0
        from harness.launch.display import Display

        with sweep_dir.driver_lock():
            sweep_dir.check_plan(ids, f"preset {sweep.spec.preset}, data {sweep.spec.data}")
            sweep_dir.write_spec(sweep.record())
            executor, why = make_executor(args.executor, sweep_dir.path, profile,
                                          sweep.spec.slurm.overrides, args.max_parallel,
                                          sweep.name)
            print(why, flush=True)
            display = Display(f"sweep {sweep.name} ({executor.name}, {sweep_dir.path})")
            outcomes = GridRun(sweep, selected, sweep_dir, executor, display, options).run()
        print_results(result_rows(sweep_dir, [t.trial_id for t in selected]))
        ok = all(state == DONE for state in outcomes.values())
        if not ok:
            print(f"{sum(s != DONE for s in outcomes.values())} trial(s) not done; see their "
                  "error.json; re-run with --retry-failed to try them again")
    if not args.no_report and any((p / "result.json").is_file()
                                  for p in sweep_dir.path.glob("*/")):
        ok = build_sweep_report(sweep.name, args.runs_dir, args.reports_dir) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
