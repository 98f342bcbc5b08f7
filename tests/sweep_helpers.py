"""Shared by the sweep tests: sweep files, the CLI in-process, fake train/evaluate stages, and
reading offline W&B runs back."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from harness.cli import run_main
from harness.config import config_to_dict
from harness.io import atomic_write_json, atomic_write_yaml
from harness.sweep import build_parser, main
from harness.training.loop import CONFIG_FILE


def write_sweep(path: Path, **fields: Any) -> Path:
    """A sweep file with `fields` (name defaults to 'demo', preset to 'smoke')."""
    spec = {"name": "demo", "preset": "smoke", "wandb": False, "slurm": {"profile": "local"},
            **fields}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sweep_cli(*argv: str) -> int:
    """`python -m harness.sweep ARGV` in this process (executor local unless ARGV names one,
    so that the monkeypatched stages run); its exit code."""
    executor = [] if "--executor" in argv else ["--executor", "local"]
    return run_main(main, build_parser(), [*argv, *executor, "--no-report", "--poll", "0.2"])


def calls(run_dir: Path) -> list[str]:
    """The stages a fake run went through, in order."""
    path = run_dir / "calls.txt"
    return path.read_text().split() if path.is_file() else []


def _note(run_dir: Path, what: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.txt", "a") as file:
        file.write(what + "\n")


def fake_train(config: Any, run_dir: Path, stage_every: int | None = None,
               on_stage: Any = None) -> None:
    """Stands in for training: config.yaml and status.json like the loop's, a note in
    calls.txt; with stages, calls on_stage at each stage end like the real one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run_dir / CONFIG_FILE, config_to_dict(config))
    total = config.train.iterations
    if stage_every and on_stage is not None:
        for end in range(stage_every, total, stage_every):
            atomic_write_json(run_dir / "status.json",
                              {"state": "done", "iteration": end, "total": end})
            on_stage(end)
    _note(run_dir, "train")
    atomic_write_json(run_dir / "status.json",
                      {"state": "done", "iteration": total, "total": total})


def fake_evaluate(run_dir: Path, metrics: list[str] | None = None,
                  track: bool | None = None) -> dict[str, Any]:
    """Stands in for evaluate_run: fid from the lifting alpha (smaller alpha, lower fid); what
    it was asked (its arguments and the run's evaluate.* settings) goes to evaluation.json."""
    config = yaml.safe_load((run_dir / "trial.json").read_text())
    alpha = config["overrides"].get("model.lifting.alpha", 1.0)
    status = json.loads((run_dir / "status.json").read_text())
    values = {"fid": 10.0 * alpha + 100.0 / status["iteration"], "kid": 0.01 * alpha,
              "iteration": status["iteration"]}
    if track is not False:
        _note(run_dir, "eval")
    settings = yaml.safe_load((run_dir / CONFIG_FILE).read_text())["evaluate"]
    atomic_write_json(run_dir / "evaluation.json",
                      {"metrics": metrics, "track": track, "evaluate": settings})
    atomic_write_json(run_dir / "metrics.json", values)
    return values


def offline_runs(root: Path, wait_s: float = 30.0) -> list[Any]:
    """The offline W&B runs under `root` (harness.report's reader), with their tags and
    define_metric summaries added as `tags` and `metric_summaries`. Waits up to `wait_s` for
    every run to be complete (wandb's service may still be writing just after finish())."""
    from wandb.proto import wandb_internal_pb2 as pb

    from harness.wandb_offline import payloads, read_offline_runs

    deadline = time.monotonic() + wait_s
    runs = read_offline_runs(root)
    while any(run.state == "running" for run in runs) and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = read_offline_runs(root)
    for run in runs:
        run.tags, run.metric_summaries = set(), {}
        for path in root.rglob(f"offline-run-*-{run.run_id}/run-{run.run_id}.wandb"):
            for payload in payloads(path.read_bytes(), path):
                record = pb.Record.FromString(payload)
                kind = record.WhichOneof("record_type")
                if kind == "run":
                    run.tags |= set(record.run.tags)
                elif kind == "metric" and record.metric.name:
                    summary = record.metric.summary
                    run.metric_summaries[record.metric.name] = (
                        "min" if summary.min else "max" if summary.max else "")
    return runs
