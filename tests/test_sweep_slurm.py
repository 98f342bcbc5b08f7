"""The sweep driver against the real one-node SLURM cluster (slurm/start_local_cluster.sh).

One grid sweep of two smoke trials is driven through everything that can happen to it: the
driver is killed mid-sweep, one trial is preempted (`scancel --signal=USR2`: submitit
checkpoints and requeues), the other is requeued plainly (`scontrol requeue`: no
checkpoint() call), the same command is run again, and once each trial has resumed it gets
the other signal (so each sees both, in opposite orders). Then an Optuna search with two
parallel SLURM workers, and a trial whose training is data-parallel over two SLURM tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import offline_runs, write_sweep
from test_slurm_cluster import _find_slurm_conf

pytestmark = pytest.mark.slurm

TIMEOUT_S = 600  # for a whole driver run on a busy 2-core machine
ITERATIONS = 24
VARIANTS = [{"name": "a1", "set": {"model.lifting.alpha": 1.0}},
            {"name": "a2", "set": {"model.lifting.alpha": 2.0}}]
SMOKE = {"train.iterations": ITERATIONS, "train.checkpoint_every": 2, "train.log_every": 2,
         "train.sample_every": ITERATIONS}


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a driver (and so of its jobs): the cluster, a shared data cache, a
    fresh $HOME (nothing may land there) and no W&B credentials."""
    conf, reason = _find_slurm_conf()
    if conf is None:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(SLURM_CONF=conf, HOME=str(tmp_path_factory.mktemp("home")),
               HARNESS_CACHE_DIR=str(tmp_path_factory.mktemp("data-cache")))
    return env


def _driver(sweep: Path, runs: Path, env: dict[str, str], log: Path,
            *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.sweep", str(sweep), "--runs-dir", str(runs),
         "--executor", "slurm", "--poll", "1", "--no-report", *extra],
        env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT)


def _wait_for(condition, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def _finish(driver: subprocess.Popen, log: Path) -> int:
    try:
        return driver.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail(f"driver still running after {TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _slurm(*argv: str, env: dict[str, str]) -> None:
    subprocess.run(list(argv), env=env, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def grid(cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the grid scenario once; what the tests look at."""
    tmp = tmp_path_factory.mktemp("grid")
    sweep = write_sweep(tmp / "s.yaml", name="slurmgrid", wandb=True,
                        grid={"variants": VARIANTS},
                        overrides={**SMOKE, "evaluate.fid_samples": 16}, metrics=["fid"])
    runs, log = tmp / "runs", tmp / "driver.log"
    sweep_dir = runs / "slurmgrid"
    first = _driver(sweep, runs, cluster_env, log)

    def checkpointed() -> bool:
        states = list(sweep_dir.glob("*/checkpoints/training-state-00000002.pt"))
        return len(states) == 2 or first.poll() is not None

    _wait_for(checkpointed, "both trials to write their first checkpoint")
    first.send_signal(signal.SIGKILL)  # the driver dies mid-sweep
    first.wait()
    state = json.loads((sweep_dir / "state.json").read_text())
    jobs = {trial: record["job_id"] for trial, record in state["trials"].items()}
    preempted, requeued = sorted(jobs)
    status = {t: json.loads((sweep_dir / t / "status.json").read_text()) for t in jobs}
    run_ids = {t: (sweep_dir / t / "wandb_run_id").read_text() for t in jobs}
    usr2 = ("scancel", "--signal=USR2")
    requeue = ("scontrol", "requeue")
    _slurm(*usr2, jobs[preempted], env=cluster_env)
    _slurm(*requeue, jobs[requeued], env=cluster_env)
    second = _driver(sweep, runs, cluster_env, log)  # the same command again
    for trial_id, other in ((preempted, requeue), (requeued, usr2)):  # a mix on each trial

        def trained_after_resuming(trial_id: str = trial_id) -> bool:
            job = jobs[trial_id]
            job_log = sweep_dir / "slurm" / job / f"{job}_0_log.err"
            text = job_log.read_text() if job_log.is_file() else ""
            if "resuming" not in text:
                return False
            resumed = int(text.split("from iteration ")[-1].split()[0])
            path = sweep_dir / trial_id / "status.json"
            return json.loads(path.read_text()).get("iteration", 0) > resumed

        _wait_for(trained_after_resuming, f"{trial_id} to train after its first resume")
        _slurm(*other, jobs[trial_id], env=cluster_env)
    code = _finish(second, log)
    return {"dir": sweep_dir, "jobs": jobs, "status": status, "run_ids": run_ids,
            "preempted": preempted, "requeued": requeued, "code": code,
            "log": log.read_text(), "state": json.loads((sweep_dir / "state.json").read_text())}


def test_grid_sweep_finishes_on_slurm_with_results_and_wandb_runs(grid: dict) -> None:
    assert grid["code"] == 0, grid["log"][-3000:]
    for trial_id in grid["jobs"]:
        run_dir = grid["dir"] / trial_id
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "done" and result["metrics"]["iteration"] == ITERATIONS
        logged = {run.job_type: run for run in offline_runs(run_dir)}
        assert set(logged) == {"train", "eval"}
        assert logged["train"].group == "slurmgrid" and logged["eval"].state == "finished"
        assert logged["eval"].summary["fid"] == pytest.approx(result["metrics"]["fid"])


@pytest.mark.parametrize("which", ["preempted", "requeued"])
def test_interrupted_trial_resumes_from_its_checkpoint(grid: dict, which: str) -> None:
    """After USR2 (checkpoint() and requeue) and a plain `scontrol requeue`, in either order,
    the trial resumes from the checkpoint on disk each time: same final iteration, no
    duplicated metrics, same W&B run, and a W&B history equal to metrics.jsonl."""
    trial_id = grid[which]
    run_dir = grid["dir"] / trial_id
    assert grid["status"][trial_id]["iteration"] < ITERATIONS  # interrupted mid-training
    job = grid["jobs"][trial_id]
    job_log = (grid["dir"] / "slurm" / job / f"{job}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in job_log and f"Requeued job {job}" in job_log
    resumed = [line for line in job_log.splitlines() if f"resuming {run_dir} from" in line]
    assert len(resumed) == 2 and int(resumed[0].split("from iteration ")[1].split()[0]) >= 2
    iterations = [json.loads(line)["iteration"]
                  for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(2, ITERATIONS + 1, 2))
    assert (run_dir / "wandb_run_id").read_text() == grid["run_ids"][trial_id]
    train_runs = [run for run in offline_runs(run_dir) if run.job_type == "train"]
    assert [run.run_id for run in train_runs] == [grid["run_ids"][trial_id].strip()]
    assert len(list((run_dir / "wandb-files" / "wandb").glob(
        f"offline-run-*-{train_runs[0].run_id}"))) >= 2  # one W&B run, resumed
    # The W&B history over every attempt's offline file (what `wandb sync` uploads) holds
    # exactly the rows of metrics.jsonl, each iteration once, though a plain requeue's SIGTERM
    # kills wandb's service with the rows it had not written yet.
    metrics = {row["iteration"]: row for row in map(json.loads, (
        run_dir / "metrics.jsonl").read_text().splitlines())}
    history = [row for row in train_runs[0].history if "train/g_loss" in row]
    assert sorted(row["iteration"] for row in history) == iterations
    assert all(row["train/g_loss"] == metrics[row["iteration"]]["train/g_loss"]
               for row in history)


def test_restarted_driver_reattaches_without_duplicate_or_lost_trial(grid: dict) -> None:
    trials = grid["state"]["trials"]
    assert {t: r["job_id"] for t, r in trials.items()} == grid["jobs"]  # nothing resubmitted
    assert all(record["attempts"] == 1 for record in trials.values())
    assert sum("re-attached to slurm job" in line for line in grid["log"].splitlines()) == 2
    tasks = [p.name for p in (grid["dir"] / "slurm").iterdir() if p.is_dir() and "_" in p.name]
    assert sorted(tasks) == sorted(grid["jobs"].values())  # one job array, one task a trial
    assert all((grid["dir"] / t / "result.json").is_file() for t in grid["jobs"])


def test_optuna_search_with_two_parallel_slurm_workers(
    cluster_env: dict[str, str], tmp_path: Path
) -> None:
    import optuna

    from harness.launch.search import open_study
    from harness.launch.spec import load_sweep

    space = {"model.lifting.alpha": {"type": "categorical", "choices": [1.0, 2.0, 3.0]}}
    sweep = write_sweep(tmp_path / "s.yaml", name="slurmsearch",
                        search={"sampler": "grid", "space": space},
                        overrides={"train.iterations": 2, "train.checkpoint_every": 2,
                                   "evaluate.fid_samples": 16},
                        metrics=["fid"])
    runs, log = tmp_path / "runs", tmp_path / "driver.log"
    code = _finish(_driver(sweep, runs, cluster_env, log, "--max-parallel", "2"), log)
    assert code == 0, log.read_text()[-3000:]
    study = open_study(load_sweep(sweep), runs / "slurmsearch", None)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert sorted(t.params["model.lifting.alpha"] for t in trials) == [1.0, 2.0, 3.0]
    assert len({t.user_attrs["job_id"] for t in trials}) == 2  # two workers shared the work
    for t in trials:
        result = json.loads((runs / "slurmsearch" / t.user_attrs["trial_id"]
                             / "result.json").read_text())
        assert result["metrics"]["fid"] == pytest.approx(t.value)


def test_trial_trains_data_parallel_over_two_slurm_tasks(
    cluster_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit

    sweep = write_sweep(tmp_path / "s.yaml", name="slurmddp",
                        slurm={"profile": "local", "overrides": {"tasks_per_node": 2}},
                        overrides={"train.iterations": 2, "train.checkpoint_every": 2,
                                   "evaluate.fid_samples": 16},
                        metrics=["fid"])
    runs, log = tmp_path / "runs", tmp_path / "driver.log"
    assert _finish(_driver(sweep, runs, cluster_env, log), log) == 0, log.read_text()[-3000:]
    state = json.loads((runs / "slurmddp" / "state.json").read_text())
    ((trial_id, record),) = state["trials"].items()
    monkeypatch.setenv("SLURM_CONF", cluster_env["SLURM_CONF"])
    job = submitit.SlurmJob(runs / "slurmddp" / "slurm" / "%j", record["job_id"], tasks=(0, 1))
    rank0, rank1 = job.results()
    assert rank0["trial_id"] == trial_id and rank0["status"] == "done"
    assert rank1 is None  # rank 1 trained, and left evaluation and result.json to rank 0


def test_usr2_during_training_saves_the_current_iteration_and_redoes_none(
    cluster_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial preempted with USR2 mid-training (no periodic checkpoint before its end) saves
    the iteration it reached before submitit requeues it; the requeued job resumes there."""
    import submitit
    import yaml

    from harness.config import config_to_dict, load_config
    from harness.launch.trial import TrialJob

    for key in ("SLURM_CONF", "HOME", "HARNESS_CACHE_DIR"):
        monkeypatch.setenv(key, cluster_env[key])
    iterations = 200
    config = load_config(None, "smoke", [f"train.iterations={iterations}", "train.log_every=1",
                                         f"train.checkpoint_every={iterations}",
                                         f"train.sample_every={iterations}",
                                         "evaluate.metrics=[fid]", "evaluate.fid_samples=16"])
    run_dir = tmp_path / "run"
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm" / "%j", slurm_max_num_timeout=3)
    executor.update_parameters(**yaml.safe_load(
        (Path(__file__).parents[1] / "slurm" / "profiles" / "local.yaml").read_text()))
    job = executor.submit(TrialJob(run_dir, config_to_dict(config), "usr2"))

    def trained(at_least: int) -> bool:
        path = run_dir / "status.json"
        return path.is_file() and json.loads(path.read_text()).get("iteration", 0) >= at_least

    _wait_for(lambda: trained(3), "the job to train 3 iterations")
    _slurm("scancel", "--signal=USR2", job.job_id, env=cluster_env)
    _wait_for(job.done, "the requeued job to finish")
    assert job.result()["status"] == "done"
    job_log = (tmp_path / "slurm" / job.job_id / f"{job.job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in job_log and f"Requeued job {job.job_id}" in job_log
    saved = [int(line.split("saved iteration ")[1].split()[0])
             for line in job_log.splitlines() if "for the preemption" in line]
    resumed = [int(line.split("from iteration ")[1].split()[0])
               for line in job_log.splitlines() if f"resuming {run_dir} from" in line]
    assert len(saved) == 1 and 3 <= saved[0] < iterations
    assert resumed == saved  # iterations redone after the requeue: resumed - saved = 0
    metrics = [json.loads(line)["iteration"]
               for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, iterations + 1))
