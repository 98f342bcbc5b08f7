"""Optuna searches run in-process: budget, no duplicate grid point, storage, recovery of
trials left RUNNING by a dead worker, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import calls, fake_evaluate, fake_train, sweep_cli, write_sweep

from harness.launch import trial as trial_module
from harness.launch.search import JOURNAL_FILE, open_study
from harness.launch.spec import load_sweep
from harness.launch.state import SweepDir

GRID = {"sampler": "grid", "objective": {"metric": "fid", "direction": "minimize"},
        "space": {"model.lifting.alpha": {"type": "categorical", "choices": [1.0, 2.0, 3.0]}}}


@pytest.fixture(autouse=True)
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials train and evaluate instantly (the search's logic is what is tested)."""
    monkeypatch.setattr(trial_module, "train", fake_train)
    monkeypatch.setattr(trial_module, "evaluate", fake_evaluate)


def _study(path: Path, runs: Path) -> optuna.Study:
    sweep = load_sweep(path)
    return open_study(sweep, SweepDir(runs, sweep.name).path, None)


def test_grid_search_runs_each_point_once_and_stores_every_result(tmp_path: Path,
                                                                  capsys) -> None:
    path = write_sweep(tmp_path / "s.yaml", search=GRID, metrics=["fid"])
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    assert "best: trial" in capsys.readouterr().out
    assert (runs / "demo" / JOURNAL_FILE).is_file()  # the default storage
    study = _study(path, runs)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params["model.lifting.alpha"] for t in trials) == [1.0, 2.0, 3.0]
    assert study.best_params == {"model.lifting.alpha": 1.0}
    trial_ids = {t.user_attrs["trial_id"] for t in trials}
    assert trial_ids == set(SweepDir(runs, "demo").trial_ids_on_disk())
    for t in trials:
        run_dir = runs / "demo" / t.user_attrs["trial_id"]
        result = json.loads((run_dir / "result.json").read_text())
        assert result["metrics"]["fid"] == pytest.approx(t.value)
        assert calls(run_dir) == ["train", "eval"]
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0  # done: nothing runs again
    assert len(_study(path, runs).get_trials()) == 3
    assert all(calls(runs / "demo" / i) == ["train", "eval"] for i in trial_ids)


def test_trial_of_a_dead_worker_is_marked_failed_and_run_again(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", search={**GRID, "space": {
        "model.lifting.alpha": {"type": "categorical", "choices": [1.0, 2.0]}}})
    runs = tmp_path / "runs"
    study = _study(path, runs)
    orphan = study.ask()
    orphan.suggest_categorical("model.lifting.alpha", [1.0, 2.0])
    orphan.set_user_attr("executor", "local")  # its driver's process is gone
    orphan.set_user_attr("job_id", "pid1")
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    trials = _study(path, runs).get_trials()
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == trials[0].params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.lifting.alpha"] for t in complete) == [1.0, 2.0]


def test_failed_search_trials_are_retried_with_retry_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path / "s.yaml", search={**GRID, "space": {
        "model.lifting.alpha": {"type": "categorical", "choices": [1.0, 2.0]}}})
    runs = tmp_path / "runs"

    def broken(config, run_dir, *args):
        if config.model.lifting.alpha == 2.0:
            raise RuntimeError("diverged")
        fake_train(config, run_dir, *args)

    monkeypatch.setattr(trial_module, "train", broken)
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 1  # failures count as trials
    states = sorted(t.state.name for t in _study(path, runs).get_trials())
    assert states == ["COMPLETE", "FAIL"]
    monkeypatch.setattr(trial_module, "train", fake_train)
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--retry-failed") == 0
    trials = _study(path, runs).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert {t.params["model.lifting.alpha"] for t in trials
            if t.state == TrialState.COMPLETE} == {1.0, 2.0}


def test_pruning_stops_a_worse_trial_early(tmp_path: Path) -> None:
    space = {"model.lifting.alpha": {"type": "categorical", "choices": [1.0, 5.0]}}
    path = write_sweep(tmp_path / "s.yaml", search={
        "sampler": "grid", "sampler_seed": 1, "space": space,  # seed 1: alpha 1 first
        "pruning": {"evaluations": 2, "startup_trials": 1}},
        overrides={"train.iterations": 12})
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    trials = {t.params["model.lifting.alpha"]: t for t in _study(path, runs).get_trials()}
    assert trials[1.0].state == TrialState.COMPLETE
    assert trials[1.0].intermediate_values == {4: 35.0, 8: 22.5}
    worse = trials[5.0]
    assert worse.state == TrialState.PRUNED and list(worse.intermediate_values) == [4]
    run_dir = runs / "demo" / worse.user_attrs["trial_id"]
    assert not (run_dir / "result.json").exists()
    assert "pruned at iteration 4" in json.loads((run_dir / "pruned.json").read_text())["message"]


def test_storage_can_be_another_journal(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", search={**GRID, "space": {
        "model.lifting.alpha": {"type": "categorical", "choices": [1.0]}}})
    journal = tmp_path / "elsewhere" / "study.journal"
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs"),
                     "--storage", str(journal)) == 0
    assert journal.is_file() and not (tmp_path / "runs" / "demo" / JOURNAL_FILE).exists()


def test_search_settings_of_a_directory_are_kept(tmp_path: Path, capsys) -> None:
    path = write_sweep(tmp_path / "s.yaml", search={**GRID, "space": {
        "model.lifting.alpha": {"type": "categorical", "choices": [1.0]}}})
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--preset", "cpu") == 2
    assert "holds a search with another preset" in capsys.readouterr().err


def test_non_utf8_settings_of_a_directory_are_one_line_error(tmp_path: Path, capsys) -> None:
    path = write_sweep(tmp_path / "s.yaml", search=GRID)
    kept = tmp_path / "runs" / load_sweep(path).name / "sweep.yaml"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"name: \xff\n")
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs")) == 2
    assert capsys.readouterr().err == f"error: {kept}: not UTF-8 text (byte 6 is 0xff); save " \
        "the file as UTF-8, or restore it if it was damaged\n"
    assert kept.read_bytes() == b"name: \xff\n"  # left as it was


def test_storage_can_be_an_rdb_url(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", search={**GRID, "space": {
        "model.lifting.alpha": {"type": "categorical", "choices": [1.0, 2.0]}}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs"), "--storage", url) == 0
    study = optuna.load_study(study_name="demo", storage=url)
    assert sorted(t.params["model.lifting.alpha"] for t in study.get_trials()) == [1.0, 2.0]
