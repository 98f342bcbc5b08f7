"""Pieces of harness/launch: the live display, executor choice, and parallel local processes
running real (smoke) trials through submitit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sweep_helpers import sweep_cli, write_sweep

from harness.errors import UserError
from harness.launch import executors
from harness.launch.display import Display, Row, format_seconds, render_table
from harness.launch.state import SweepDir

ROWS = [Row("a-s0-1", "done", 12, 12, note="fid=20.5"),
        Row("b-s0-2", "running", 6, 12, 0.5, 12.0, "7_1"),
        Row("c-s0-3", "pending", job_id="7_2"),
        Row("d-s0-4", "failed", note="train: RuntimeError: boom")]


def test_table_shows_progress_eta_and_outcomes() -> None:
    lines = render_table(ROWS, "sweep demo")
    assert lines[0] == "sweep demo" and lines[1].split() == ["trial", "state", "iteration",
                                                              "it/s", "ETA", "job"]
    assert lines[3].split() == ["b-s0-2", "running", "6/12", "0.50", "12s", "7_1"]
    assert lines[-1] == "1 done, 1 running, 1 pending, 1 failed"
    assert format_seconds(3725) == "1h02m" and format_seconds(125) == "2m05s"


def test_terminal_redraws_in_place_and_logs_get_lines() -> None:
    tty = io.StringIO()
    display = Display("t", stream=tty, interactive=True)
    display.update(ROWS)
    display.update(ROWS)
    height = len(render_table(ROWS, "t"))
    assert tty.getvalue().count(f"\x1b[{height}F\x1b[J") == 1  # the second draw replaces
    log = io.StringIO()
    display = Display("t", stream=log, interactive=False, every_s=3600)
    display.update(ROWS)
    display.update(ROWS)  # nothing changed: no new lines
    display.update([Row("b-s0-2", "done", 12, 12, note="fid=19")] + ROWS[2:])
    lines = log.getvalue().splitlines()
    assert sum("b-s0-2 running (job 7_1)" in line for line in lines) == 1
    assert any(line.endswith("b-s0-2 done: fid=19") for line in lines)
    assert sum("1 done, 1 running, 1 pending, 1 failed" in line for line in lines) == 1


def test_auto_runs_locally_without_a_cluster(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors.slurm, "probe_cluster", lambda: (None, "sinfo not found"))
    executor, why = executors.make_executor("auto", tmp_path, "local", {}, None, "x")
    assert executor.name == "local" and "no SLURM cluster (sinfo not found)" in why
    monkeypatch.setattr(executors.slurm, "probe_cluster", lambda: (["debug"], ""))
    executor, why = executors.make_executor("auto", tmp_path, "gpu", {}, None, "x")
    assert executor.name == "local" and "no partition 'gpu'" in why
    with pytest.raises(UserError, match="SLURM profile 'nope'"):
        executors.make_executor("slurm", tmp_path, "nope", {}, None, "x")


def test_processes_executor_runs_trials_in_parallel_processes(
    tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(data_cache))
    variants = [{"name": "a1", "set": {"model.lifting.alpha": 1.0}},
                {"name": "a2", "set": {"model.lifting.alpha": 2.0}}]
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": variants},
                       overrides={"train.iterations": 2, "train.checkpoint_every": 2,
                                  "evaluate.fid_samples": 16},
                       metrics=["fid"])
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--executor", "processes",
                     "--max-parallel", "2") == 0
    sweep_dir = SweepDir(runs, "demo")
    state = json.loads((sweep_dir.path / "state.json").read_text())
    pids = {record["job_id"] for record in state["trials"].values()}
    assert len(pids) == 2 and all(r["executor"] == "processes" for r in state["trials"].values())
    for trial_id in sweep_dir.trial_ids_on_disk():
        result = json.loads((sweep_dir.run_dir(trial_id) / "result.json").read_text())
        assert result["status"] == "done" and result["metrics"]["iteration"] == 2
        job = state["trials"][trial_id]["job_id"]
        assert (sweep_dir.path / "jobs" / job / f"{job}_0_log.err").is_file()
