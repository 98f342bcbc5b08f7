"""The sweep driver without SLURM: expansion, stable ids, validation, dry runs, and the local
executor's resume guarantees (no duplicate, no lost trial, --only, --retry-failed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from full_disk import HINT, fill_disk_in_torch_save, report_free
from sweep_helpers import calls, fake_evaluate, fake_train, offline_runs, sweep_cli, write_sweep

from harness.config import available_cpus
from harness.errors import UserError
from harness.io import atomic_torch_save
from harness.launch import trial as trial_module
from harness.launch.driver import GridRun, Options
from harness.launch.executors import ENDED, Executor
from harness.launch.spec import expand, load_sweep
from harness.launch.state import SweepDir

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [{"name": "a1", "set": {"model.lifting.alpha": 1.0}},
            {"name": "a2", "set": {"model.lifting.alpha": 2.0}}]


@pytest.fixture()
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials train and evaluate instantly (the driver's logic is what is tested)."""
    monkeypatch.setattr(trial_module, "train", fake_train)
    monkeypatch.setattr(trial_module, "evaluate", fake_evaluate)


def _ids(runs: Path, name: str = "demo") -> list[str]:
    return SweepDir(runs, name).trial_ids_on_disk()


def test_grid_expands_variants_times_axes_times_seeds(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", seeds=[0, 1],
                       grid={"variants": VARIANTS, "model.relative_depth": [True, False]},
                       overrides={"train.iterations": 3})
    trials = expand(load_sweep(path))
    assert len(trials) == 2 * 2 * 2
    first = trials[0]
    assert first.variant == "a1_relative_depth-true" and first.seed == 0
    assert first.trial_id.startswith("a1_relative_depth-true-s0-")
    assert first.config.model.lifting.alpha == 1.0 and first.config.train.iterations == 3
    assert first.config.train.seed == 0 and first.config.tracking.group == "demo"
    assert {(t.config.model.lifting.alpha, t.config.model.relative_depth, t.seed)
            for t in trials} == {(a, r, s) for a in (1.0, 2.0) for r in (True, False)
                                 for s in (0, 1)}
    assert len({t.trial_id for t in trials}) == 8


def test_trial_ids_are_stable_and_follow_what_the_trial_computes(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    ids = [t.trial_id for t in expand(load_sweep(path))]
    assert ids == [t.trial_id for t in expand(load_sweep(path))]  # stable
    # where data are cached or logged, or how many snapshots are kept, does not change a
    # trial; its settings do
    cached = load_sweep(path, sets=[f"data.cache_dir={tmp_path}", "tracking.wandb=true",
                                    "train.keep_snapshots=0"])
    assert [t.trial_id for t in expand(cached)] == ids
    longer = load_sweep(path, sets=["train.iterations=99"])
    assert not set(ids) & {t.trial_id for t in expand(longer)}
    assert [t.trial_id.split("-s0-")[0] for t in expand(longer)] == ["a1", "a2"]
    # the thread count changes the numbers, so it is resolved into the config and the id
    threads = {t.config.train.threads for t in expand(load_sweep(path))}
    assert threads == {available_cpus()}
    other = load_sweep(path, sets=[f"train.threads={available_cpus() + 1}"])
    assert not set(ids) & {t.trial_id for t in expand(other)}


def test_what_a_trial_measures_is_in_its_config_and_id(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS}, metrics=["kid", "fid"],
                       inception_weights="/w/inception.pth")
    trials = expand(load_sweep(path))
    settings = trials[0].config.evaluate
    assert settings.metrics == ["fid", "kid"] and settings.inception_weights == "/w/inception.pth"
    assert trials[0].record("demo")["overrides"]["evaluate.metrics"] == ["kid", "fid"]
    ids = [t.trial_id for t in trials]
    # the metrics and their sample counts change what a trial computes ...
    for change in ({"metrics": ["fid"]}, {"overrides": {"evaluate.fid_samples": 64}}):
        changed = write_sweep(tmp_path / "c.yaml", grid={"variants": VARIANTS},
                              **{"metrics": ["kid", "fid"], **change})
        assert not set(ids) & {t.trial_id for t in expand(load_sweep(changed))}, change
    # ... where a weight file lies does not (the command line's path resumes the same trials)
    moved = write_sweep(tmp_path / "m.yaml", grid={"variants": VARIANTS}, metrics=["kid", "fid"],
                        inception_weights="/elsewhere/inception.pth")
    assert [t.trial_id for t in expand(load_sweep(moved))] == ids


def test_variant_may_change_the_model(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": [
        {"name": "m", "model": "3dssgan", "set": {"model.relative_depth": False}}]})
    (trial,) = expand(load_sweep(path))
    assert trial.config.model.name == "3dssgan" and trial.overrides["model.name"] == "3dssgan"


def test_paper_sweeps_expand_with_the_papers_variants() -> None:
    lifting = expand(load_sweep(ROOT / "sweeps" / "ablation_lifting.yaml"))
    assert [(t.config.model.lifting.function, t.config.model.lifting.alpha) for t in lifting] \
        == [("gaussian", 1.0), ("gaussian", 2.0), ("inverse_abs", 1.0), ("inverse_square", 1.0)]
    assert {t.config.preset for t in lifting} == {"cpu"}
    assert {t.config.data.source for t in lifting} == {"synthetic"}
    depth = expand(load_sweep(ROOT / "sweeps" / "ablation_relative_depth.yaml"))
    assert [t.config.model.relative_depth for t in depth] == [True, False]
    nerf = expand(load_sweep(ROOT / "sweeps" / "ablation_nerf_weights.yaml"))
    assert [t.config.model.mask_nerf_weights for t in nerf] == [True, False]
    paper = expand(load_sweep(ROOT / "sweeps" / "ablation_lifting.yaml", preset="paper",
                              data="celebamask-hq=/datasets/CelebAMask-HQ"))
    assert {(t.config.preset, t.config.data.path) for t in paper} == {
        ("paper", "/datasets/CelebAMask-HQ")}
    tune = load_sweep(ROOT / "sweeps" / "tune_3dssgan.yaml")
    assert tune.spec.search is not None and tune.spec.search.objective.metric == "fid"
    assert set(tune.spec.search.space) == {"model.depth_smoothness_weight", "train.lr",
                                           "model.lifting.alpha"}


def test_every_shipped_sweep_loads_and_asks_only_for_metrics_the_suite_has() -> None:
    from harness.launch.spec import metric_group

    assert metric_group("mask/class_tv") == "classes"
    assert metric_group("id_consistency") == "id" and metric_group("kid_std") == "kid"
    assert metric_group("d_mean_masked/mouth@frontal") == "disentangle"
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        assert expand(load_sweep(path)) or load_sweep(path).spec.search, path.name
    baselines = expand(load_sweep(ROOT / "sweeps" / "baselines.yaml"))
    assert [t.config.model.name for t in baselines] == ["3dssgan", "cnerf", "ide3d", "ssgan2d"]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"seedz": [1]}, "unknown key 'seedz'; did you mean 'seeds'?"),
    ({"grid": {"varients": []}}, "unknown key 'varients'; did you mean 'variants'?"),
    ({"grid": {"variants": [{"name": "a", "set": {"model.lifting.fnction": "gaussian"}}]}},
     "(variant a): unknown key 'model.lifting.fnction'; did you mean 'model.lifting.function'?"),
    ({"overrides": {"train.lr": -1}}, "(overrides): train.lr = -1 is invalid"),
    ({"grid": {"train.iteratons": [1, 2]}}, "unknown key 'train.iteratons'"),
    ({"search": {"trials": 2, "space": {"model.foo": {"type": "float", "low": 0, "high": 1}}}},
     "(search.space): unknown key 'model.foo'"),
    ({"data": "imagenet"}, "data: data 'imagenet' is not synthetic or celebamask-hq=PATH"),
    ({"report": {"tables": ["nonsense"]}},
     "report.tables: 'nonsense' is not a report table; choose from disentanglement, "),
    ({"grid": {"variants": VARIANTS}, "reference": "a3"},
     "reference 'a3' is not a variant of grid: choose one of a1, a2"),
    ({"grid": {}}, "grid: no variants and no config keys to vary"),
    ({"grid": {"variants": []}}, "grid: no variants and no config keys to vary"),
    ({"grid": {"variants": [{"set": {"train.lr": 0.001}}]}},
     "grid.variants.0.name is required; add name: to grid.variants.0"),
    ({"eval_samples": 16}, "eval_samples is gone: set each metric's count in overrides:"),
    ({"overrides": {"evaluate.metrics": ["fid", "lpips"]}},
     "(overrides): evaluate.metrics: unknown metric 'lpips'; choose from fid, kid, id,"),
])
def test_a_mistake_in_a_sweep_file_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict, expected: str
) -> None:
    path = write_sweep(tmp_path / "bad.yaml", **fields)
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}")
    assert expected in err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_file_that_is_not_utf8_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "utf16.yaml"
    path.write_text("name: demo\npreset: smoke\n", encoding="utf-16")
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: not UTF-8 text (byte 0 is 0xff); save the file as UTF-8, " \
        "or restore it if it was damaged\n"
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_the_plan_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    assert sweep_cli(str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")) == 0
    out = capsys.readouterr().out
    for trial in expand(load_sweep(path)):
        assert trial.trial_id in out
    assert "model.lifting.alpha=2.0" in out and "new" in out
    assert not (tmp_path / "runs").exists()


def test_local_sweep_resumes_without_duplicating_or_losing_a_trial(
    tmp_path: Path, fake_stages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    runs = tmp_path / "runs"
    first, second = (t.trial_id for t in expand(load_sweep(path)))

    def interrupted(config, run_dir, *args):  # Ctrl-C during the second trial
        if run_dir.name == second:
            raise KeyboardInterrupt
        fake_train(config, run_dir, *args)

    monkeypatch.setattr(trial_module, "train", interrupted)
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--executor", "local") == 130
    sweep_dir = SweepDir(runs, "demo")
    assert (sweep_dir.run_dir(first) / "result.json").is_file()
    assert not (sweep_dir.run_dir(second) / "result.json").is_file()
    monkeypatch.setattr(trial_module, "train", fake_train)
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--executor", "local") == 0
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--executor", "local") == 0
    assert calls(sweep_dir.run_dir(first)) == ["train", "eval"]  # never run again
    assert calls(sweep_dir.run_dir(second)) == ["train", "eval"]
    result = json.loads((sweep_dir.run_dir(second) / "result.json").read_text())
    assert result["trial_id"] == second and result["status"] == "done"
    assert result["metrics"]["fid"] == pytest.approx(10 * 2.0 + 100 / 12)
    assert set(result["seconds"]) == {"train", "eval", "total"}
    record = json.loads((sweep_dir.run_dir(second) / "trial.json").read_text())
    assert record == {"trial_id": second, "sweep": "demo", "variant": "a2", "seed": 0,
                      "overrides": record["overrides"], "model": "3dssgan", "preset": "smoke"}
    assert record["overrides"]["model.lifting.alpha"] == 2.0
    state = json.loads((sweep_dir.path / "state.json").read_text())
    assert set(state["trials"]) == {first, second}
    spec = yaml.safe_load((sweep_dir.path / "sweep.yaml").read_text())
    assert spec["name"] == "demo" and spec["preset"] == "smoke"


def test_only_runs_the_named_trial(tmp_path: Path, fake_stages: None,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    runs = tmp_path / "runs"
    first, second = (t.trial_id for t in expand(load_sweep(path)))
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--only", second) == 0
    sweep_dir = SweepDir(runs, "demo")
    assert calls(sweep_dir.run_dir(second)) == ["train", "eval"]
    assert not calls(sweep_dir.run_dir(first))
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--only", "nope-s0-00000000") == 2
    assert "--only nope-s0-00000000: not a trial" in capsys.readouterr().err


def test_weight_files_reach_every_trials_evaluation(tmp_path: Path, fake_stages: None) -> None:
    # (without the id metric: the driver does not load these made-up paths before starting)
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS}, metrics=["fid"])
    runs = tmp_path / "runs"
    first, _ = (t.trial_id for t in expand(load_sweep(path)))
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--only", first, "--arcface-onnx",
                     "/w/arcface.onnx", "--face-detector-onnx", "/w/det.onnx") == 0
    asked = json.loads((SweepDir(runs, "demo").run_dir(first) / "evaluation.json").read_text())
    assert asked["metrics"] is None  # the trial's config decides
    assert asked["evaluate"]["metrics"] == ["fid"]
    assert asked["evaluate"]["arcface_onnx"] == "/w/arcface.onnx"
    assert asked["evaluate"]["face_detector_onnx"] == "/w/det.onnx"


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_missing_data_folder_fails_before_anything_is_written(
    tmp_path: Path, fake_stages: None, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS}, metrics=["views"])
    runs, missing = tmp_path / "runs", tmp_path / "CelebAMask-HQ"
    argv = [str(path), "--runs-dir", str(runs), "--data", f"celebamask-hq={missing}"]
    assert sweep_cli(*argv, *(["--dry-run"] if dry_run else [])) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: data.path {missing}: folder not found; give the CelebAMask-HQ folder"]
    missing.mkdir()  # a folder, but not CelebAMask-HQ's
    assert sweep_cli(*argv, *(["--dry-run"] if dry_run else [])) == 2
    assert "CelebA-HQ-img not found: --raw must be" in capsys.readouterr().err
    assert not runs.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_weight_file_that_is_wrong_fails_before_any_trial_starts(
    tmp_path: Path, fake_stages: None, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS}, metrics=["fid"],
                       overrides={"evaluate.fid_extractor": "inception-v3-compat"})
    bad = tmp_path / "inception.pth"
    bad.write_text("not weights")
    runs = tmp_path / "runs"
    argv = [str(path), "--runs-dir", str(runs), "--inception-weights", str(bad)]
    assert sweep_cli(*argv, *(["--dry-run"] if dry_run else [])) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {bad}: not Inception weights (not a torch file of tensors); FID/KID need "
        "torch-fidelity's weights-inception-2015-12-05-6726825d.pth: pass --inception-weights "
        "PATH to that file"]
    assert not runs.exists()


def test_failed_trials_run_again_only_with_retry_failed(
    tmp_path: Path, fake_stages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    runs = tmp_path / "runs"
    first, second = (t.trial_id for t in expand(load_sweep(path)))

    def broken(config, run_dir, *args):
        if run_dir.name == first:
            raise RuntimeError("out of memory")
        fake_train(config, run_dir, *args)

    monkeypatch.setattr(trial_module, "train", broken)
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 1
    sweep_dir = SweepDir(runs, "demo")
    error = json.loads((sweep_dir.run_dir(first) / "error.json").read_text())
    assert error == {"trial_id": first, "stage": "train",
                     "message": "RuntimeError: out of memory"}
    monkeypatch.setattr(trial_module, "train", fake_train)
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 1  # failed stays failed
    assert not calls(sweep_dir.run_dir(first))
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--retry-failed") == 0
    assert calls(sweep_dir.run_dir(first)) == ["train", "eval"]
    assert calls(sweep_dir.run_dir(second)) == ["train", "eval"]
    assert not (sweep_dir.run_dir(first) / "error.json").exists()
    assert (sweep_dir.run_dir(first) / "error.prev.json").is_file()


def test_a_full_disk_fails_the_trial_with_its_one_line(
    tmp_path: Path, fake_stages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS[:1]})
    (trial,) = expand(load_sweep(path))
    checkpoint = tmp_path / "runs" / "demo" / trial.trial_id / "training-state-00000002.pt"

    def full_disk(config, run_dir, *args):
        atomic_torch_save(checkpoint, {"w": torch.zeros(1000)})

    monkeypatch.setattr(trial_module, "train", full_disk)
    fill_disk_in_torch_save(monkeypatch, room=100)
    report_free(monkeypatch, 0)
    assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs")) == 1
    error = json.loads((checkpoint.parent / "error.json").read_text())
    assert error["stage"] == "train" and error["message"] == (
        f"{checkpoint}: no space left on device (writing it needs about 3.9 KiB, 0 B free "
        f"there); {HINT}")


def test_a_sweep_directory_never_mixes_plans(
    tmp_path: Path, fake_stages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--preset", "cpu") == 2
    assert "holds 2 trial(s) that this plan does not have" in capsys.readouterr().err
    write_sweep(path, grid={"variants": VARIANTS}, seeds=[0, 1])  # a superset is fine
    assert sweep_cli(str(path), "--runs-dir", str(runs)) == 0
    assert len(_ids(runs)) == 4


def test_a_second_driver_is_refused(tmp_path: Path, fake_stages: None,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    with SweepDir(tmp_path / "runs", "demo").driver_lock():
        assert sweep_cli(str(path), "--runs-dir", str(tmp_path / "runs")) == 2
    assert "another `python -m harness.sweep` is driving this sweep" in capsys.readouterr().err


class _GoneJobs(Executor):
    """An executor whose jobs end at once without doing anything (lost jobs)."""

    name = "processes"

    def submit(self, jobs):
        return [str(10_000_000 + i) for i in range(len(jobs))]

    def states(self, job_ids):
        return dict.fromkeys(job_ids, ENDED)


def test_a_job_that_ends_without_a_result_is_recorded_as_failed(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS[:1]})
    sweep = load_sweep(path)
    sweep_dir = SweepDir(tmp_path / "runs", "demo")
    from harness.launch.display import Display

    display = Display("t", stream=open(os.devnull, "w"), interactive=False)
    outcomes = GridRun(sweep, expand(sweep), sweep_dir, _GoneJobs(), display,
                       Options(poll_s=0.01, lost_after_s=0.05)).run()
    (trial_id,) = outcomes
    assert outcomes[trial_id] == "failed"
    error = json.loads((sweep_dir.run_dir(trial_id) / "error.json").read_text())
    assert error["stage"] == "train" and "ended without a result" in error["message"]
    assert "jobs/10000000/10000000_0_log.err" in error["message"]


def test_trials_start_seed_by_seed_so_a_stopped_sweep_leaves_its_arms_paired(
        tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", seeds=[3, 1, 2], grid={"variants": VARIANTS})
    sweep = load_sweep(path)
    from harness.launch.display import Display

    display = Display("t", stream=open(os.devnull, "w"), interactive=False)
    todo = GridRun(sweep, expand(sweep), SweepDir(tmp_path / "runs", "demo"), _GoneJobs(),
                   display, Options()).prepare()
    assert [(t.seed, t.variant) for t in todo] == [
        (3, "a1"), (3, "a2"), (1, "a1"), (1, "a2"), (2, "a1"), (2, "a2")]


def test_bad_profile_key_names_the_file(tmp_path: Path) -> None:
    from harness.launch.slurm import load_profile

    profile = tmp_path / "site.yaml"
    profile.write_text("slurm_partition: gpu\nslurm_acount: me\n")
    with pytest.raises(UserError, match=r"site.yaml: unknown SLURM parameter 'slurm_acount'; "
                                        r"did you mean 'slurm_account'\?"):
        load_profile(str(profile))
    for name in ("local", "gpu", "cpu"):
        assert load_profile(name)["nodes"] == 1


def test_non_utf8_profile_is_one_line_error(tmp_path: Path) -> None:
    from harness.launch.slurm import load_profile

    profile = tmp_path / "site.yaml"
    profile.write_bytes("slurm_partition: gpu  # für alle\n".encode("latin-1"))
    with pytest.raises(UserError) as error:
        load_profile(str(profile))
    assert str(error.value).startswith(f"{profile}: not UTF-8 text (byte 25 is 0xfc)")


def test_local_sweep_end_to_end_with_offline_wandb(
    tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real training and evaluation (smoke), one W&B train and one eval run per trial, all
    W&B files inside the run directory and nothing in $HOME."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(data_cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_CACHE_DIR",
                     "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(variable, raising=False)
    path = write_sweep(tmp_path / "s.yaml", wandb=True, grid={"variants": VARIANTS[:1]},
                       overrides={"train.iterations": 4, "train.checkpoint_every": 2,
                                  "train.sample_every": 4, "evaluate.fid_samples": 16},
                       metrics=["fid"])
    runs = tmp_path / "runs"
    assert sweep_cli(str(path), "--runs-dir", str(runs), "--executor", "local") == 0
    (trial_id,) = _ids(runs)
    run_dir = runs / "demo" / trial_id
    result = json.loads((run_dir / "result.json").read_text())
    assert result["metrics"]["iteration"] == 4 and result["metrics"]["fid"] > 0
    assert json.loads((run_dir / "metrics.json").read_text())["fid"] == result["metrics"]["fid"]
    runs_logged = {run.job_type: run for run in offline_runs(run_dir)}
    assert set(runs_logged) == {"train", "eval"}
    train, evaluation = runs_logged["train"], runs_logged["eval"]
    assert train.run_id == (run_dir / "wandb_run_id").read_text().strip()
    assert evaluation.run_id == (run_dir / "wandb_run_id.eval").read_text().strip()
    for run in (train, evaluation):
        assert run.group == "demo" and run.state == "finished"
        assert {"model:3dssgan", "data:synthetic", "preset:smoke", "sweep:demo",
                "variant:a1"} <= run.tags
        assert run.config["trial.id"] == trial_id
        assert run.config["model.lifting.alpha"] == 1.0 and run.config["train.iterations"] == 4
        assert run.metric_summaries["fid"] == "min"
        assert run.metric_summaries["id_consistency"] == "max"
    assert [row["iteration"] for row in train.history if "train/g_loss" in row] == [2, 4]
    assert evaluation.summary["fid"] == pytest.approx(result["metrics"]["fid"])
    assert not list((tmp_path / "home").rglob("*wandb*"))


def test_the_sweep_ends_with_its_report(tmp_path: Path, fake_stages: None,
                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import harness.report
    from harness.cli import run_main
    from harness.sweep import build_parser, main

    asked = []

    def build_report(sweeps, runs_dir="runs", out_dir="reports", **kwargs):
        asked.append((sweeps, runs_dir, out_dir))
        return [Path(out_dir) / sweeps[0] / "README.md"]

    monkeypatch.setattr(harness.report, "build_report", build_report)
    path = write_sweep(tmp_path / "s.yaml", grid={"variants": VARIANTS})
    runs, reports = str(tmp_path / "runs"), str(tmp_path / "reports")
    argv = [str(path), "--runs-dir", runs, "--reports-dir", reports, "--executor", "local"]
    assert run_main(main, build_parser(), argv) == 0
    assert asked == [(["demo"], runs, reports)]
    out = capsys.readouterr().out
    assert f"report: {reports}/demo/README.md" in out
    assert "a2-s0-" in out and "fid" in out  # the results table
