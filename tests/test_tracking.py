"""W&B tracking offline: conventions (group, job type, tags, flattened config, define_metric
summaries), stable run ids reused on resume, and every file inside the run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import offline_runs

from harness.config import TrackingConfig, load_config
from harness.tracking import Tracker, resolve_mode, run_id


@pytest.fixture()
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No W&B credentials and a fresh $HOME (to see that nothing is written there)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_CACHE_DIR",
                     "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return home


def test_mode_is_offline_without_credentials(offline_home: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_mode(TrackingConfig()) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(TrackingConfig()) == "online"
    assert resolve_mode(TrackingConfig(mode="disabled")) == "disabled"


def test_run_ids_are_stable_per_job_type(tmp_path: Path) -> None:
    train, evaluation = run_id(tmp_path), run_id(tmp_path, "eval")
    assert train != evaluation and len(train) == 8
    assert run_id(tmp_path) == train and run_id(tmp_path, "eval") == evaluation
    assert (tmp_path / "wandb_run_id").read_text().strip() == train
    assert (tmp_path / "wandb_run_id.eval").read_text().strip() == evaluation


def test_offline_trial_runs_follow_the_conventions_and_resume(
    tmp_path: Path, offline_home: Path
) -> None:
    run_dir = tmp_path / "sweep" / "a1-s0-12345678"
    run_dir.mkdir(parents=True)
    (run_dir / "trial.json").write_text(json.dumps(
        {"trial_id": run_dir.name, "sweep": "sweep", "variant": "a1", "seed": 0,
         "overrides": {}, "model": "3dssgan", "preset": "smoke"}))
    config = load_config(None, "smoke", ["tracking.wandb=true", "tracking.group=sweep"])
    first = Tracker(config, run_dir)
    first.log({"train/g_loss": 1.0}, iteration=2)
    first.finish()
    again = Tracker(config, run_dir)  # a requeued job: the same run, resumed
    again.log({"train/g_loss": 0.5}, iteration=4)
    again.finish()
    evaluation = Tracker(config, run_dir, job_type="eval")
    evaluation.log({"fid": 30.0}, iteration=4)
    evaluation.log({"fid": 20.0}, iteration=4)
    evaluation.log({"fid": 25.0}, iteration=4)
    evaluation.finish()

    runs = offline_runs(run_dir)
    by_type = {run.job_type: [r for r in runs if r.job_type == run.job_type] for run in runs}
    assert {k: len(v) for k, v in by_type.items()} == {"train": 1, "eval": 1}
    train, ev = by_type["train"][0], by_type["eval"][0]
    assert train.run_id == (run_dir / "wandb_run_id").read_text().strip()
    assert ev.run_id == (run_dir / "wandb_run_id.eval").read_text().strip()
    assert [row["train/g_loss"] for row in train.history if "train/g_loss" in row] == [1.0, 0.5]
    assert ev.summary["fid"] == {"min": 20.0}  # define_metric: the min FID logged
    for run in (train, ev):
        assert run.group == "sweep"
        assert run.tags == {"model:3dssgan", "data:synthetic", "preset:smoke", "sweep:sweep",
                            "variant:a1"}
        assert run.config["trial.id"] == run_dir.name and run.config["trial.variant"] == "a1"
        assert run.config["model.name"] == "3dssgan" and run.config["preset"] == "smoke"
        assert run.metric_summaries["id_consistency"] == "max"
    assert train.name == run_dir.name and ev.name == f"{run_dir.name}-eval"
    assert len(list((run_dir / "wandb-files" / "wandb").glob("offline-run-*"))) == 3
    assert not [p for p in offline_home.rglob("*") if "wandb" in str(p).lower()]


def _history(run_dir: Path) -> list[dict]:
    """The training rows (train/* keys) of the run's offline files, every attempt's."""
    (train,) = [run for run in offline_runs(run_dir) if run.job_type == "train"]
    return [row for row in train.history if any(key.startswith("train/") for key in row)]


def test_a_resumed_run_logs_only_the_rows_its_history_lacks(
    tmp_path: Path, offline_home: Path
) -> None:
    config = load_config(None, "smoke", ["tracking.wandb=true"])
    rows = [{"iteration": i, "train/g_loss": 1.0 / i} for i in range(1, 7)]
    first = Tracker(config, tmp_path)
    for row in rows[:2] + rows[3:4]:  # rows 3, 5 and 6 never reached the file
        first.log({"train/g_loss": row["train/g_loss"]}, row["iteration"])
    first.log({}, 5, images={"samples": _png(tmp_path / "s.png")})  # no train/ key: lacking
    first.finish()
    again = Tracker(config, tmp_path)
    assert again.log_missing(rows) == 3
    again.finish()
    history = _history(tmp_path)
    assert sorted(row["iteration"] for row in history) == [1, 2, 3, 4, 5, 6]
    assert {row["iteration"]: row["train/g_loss"] for row in history} == {
        row["iteration"]: row["train/g_loss"] for row in rows}


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (4, 4)).save(path)
    return path


def _train(run_dir: Path, overrides: list[str], env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "harness.train", "--preset", "smoke", "--run-dir",
               str(run_dir), "--no-progress", "--quiet"]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, env=env, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)


def test_wandb_history_equals_metrics_jsonl_after_kills_that_take_wandb_down_too(
    tmp_path: Path, offline_home: Path, smoke_overrides: list[str]
) -> None:
    """SIGKILL to the whole process group (the trainer and wandb's service, as a requeue's
    SIGTERM and then SIGKILL do) twice between checkpoints: the run's W&B history over all
    attempts' offline files holds exactly the rows of metrics.jsonl, each iteration once."""
    run_dir = tmp_path / "run"
    overrides = [*smoke_overrides, "tracking.wandb=true", "train.iterations=16",
                 "train.checkpoint_every=4", "train.log_every=1", "train.sample_every=4"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
           "HOME": str(offline_home)}  # (not this process's wandb service, if it has one)
    for kill_at in (6, 11):  # past a checkpoint: rows that the resumed job logs again
        job = _train(run_dir, overrides, env)
        deadline = time.monotonic() + 300
        while _iterations(run_dir)[-1:] < [kill_at]:
            assert job.poll() is None, job.stderr.read()
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    job = _train(run_dir, overrides, env)
    assert job.wait(timeout=300) == 0, job.stderr.read()
    assert _iterations(run_dir) == list(range(1, 17))
    metrics = {row["iteration"]: row for row in map(json.loads, (
        run_dir / "metrics.jsonl").read_text().splitlines())}
    history = _history(run_dir)
    assert sorted(row["iteration"] for row in history) == list(range(1, 17))
    for row in history:
        assert row["train/g_loss"] == metrics[row["iteration"]]["train/g_loss"]
    attempts = list((run_dir / "wandb-files" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 3


def _iterations(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line)["iteration"] for line in lines if line.endswith("}")]
