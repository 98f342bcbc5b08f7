"""The shared training loop: run directory, resume determinism, NaN stop, DDP, CLI errors,
checkpoint files (pruning, interrupted writes), one trainer per run directory."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from full_disk import HINT, fill_disk_in_torch_save, report_free

from harness.cli import run_main
from harness.config import config_to_dict, load_config
from harness.data.loading import prepared_dataset_dir
from harness.errors import UserError
from harness.reproducibility import machine
from harness.runtime.checkpoint import (
    checkpoint_dir,
    latest_snapshot,
    latest_training_state,
    load_checkpoint,
    load_generator,
    save_checkpoint,
)
from harness.train import build_parser, main
from harness.training import step
from harness.training.distributed import free_port
from harness.training.lock import hold_run_dir
from harness.training.loop import TrainingDiverged, TrainResult, trained_on, training_loop

ROOT = Path(__file__).resolve().parents[1]


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_smoke_run_writes_a_complete_run_directory(tmp_path: Path, smoke_overrides) -> None:
    config = load_config(None, "smoke", smoke_overrides)
    result = training_loop(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.iteration == config.train.iterations
    assert load_config(run / "config.yaml") == config  # the resolved config reproduces the run
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == list(
        range(config.train.log_every, config.train.iterations + 1, config.train.log_every))
    assert all(torch.isfinite(torch.tensor(line["train/g_loss"])) for line in lines)
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "iter-00000006.png", "iter-00000012.png"]
    state = load_checkpoint(latest_training_state(run))
    assert state["iteration"] == 12 and state["config"] == config_to_dict(config)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["machines"] == [machine("cpu")]


def train_interrupted_and_uninterrupted(tmp_path: Path, overrides: list[str]
                                        ) -> tuple[TrainResult, TrainResult]:
    """A smoke run of 8 iterations in one go (tmp_path/a) and stopped at 4, then resumed by
    the same command (tmp_path/b): (resumed, uninterrupted). Checks that the resumed run
    reaches iteration 8 and logged each iteration once."""
    overrides = [*overrides, "train.checkpoint_every=4"]
    full = load_config(None, "smoke", [*overrides, "train.iterations=8"])
    uninterrupted = training_loop(full, tmp_path / "a", progress=False)
    first_leg = load_config(None, "smoke", [*overrides, "train.iterations=4"])
    training_loop(first_leg, tmp_path / "b", progress=False)
    resumed = training_loop(full, tmp_path / "b", progress=False)  # the same command again
    assert resumed.iteration == uninterrupted.iteration == 8
    metrics = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["iteration"] for m in metrics] == [2, 4, 6, 8]  # no duplicates
    return resumed, uninterrupted


def test_a_run_resumed_on_another_machine_lists_both(tmp_path: Path, smoke_overrides) -> None:
    overrides = [*smoke_overrides, "train.checkpoint_every=2"]
    run = tmp_path / "run"
    training_loop(load_config(None, "smoke", [*overrides, "train.iterations=2"]), run,
                  progress=False)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "machines": ["torch 0, other CPU"]}))
    training_loop(load_config(None, "smoke", [*overrides, "train.iterations=4"]), run,
                  progress=False)
    assert trained_on(run) == ["torch 0, other CPU", machine("cpu")]
    assert trained_on(tmp_path / "none") == []


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, smoke_overrides) -> None:
    resumed, uninterrupted = train_interrupted_and_uninterrupted(tmp_path, smoke_overrides)
    for name in ("generator", "discriminator", "generator_ema"):
        assert _states_equal(getattr(resumed, name), getattr(uninterrupted, name)), name


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, smoke_overrides, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss = step.g_nonsaturating_loss
    calls = {"n": 0}

    def exploding(logits: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return real_loss(logits) * (float("nan") if calls["n"] > 7 else 1.0)

    monkeypatch.setattr(step, "g_nonsaturating_loss", exploding)
    config = load_config(None, "smoke", smoke_overrides)
    with pytest.raises(TrainingDiverged, match="iteration 8"):
        training_loop(config, tmp_path / "run", progress=False)
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert "g_loss" in failure["reason"] and failure["iteration"] == 8
    assert failure["last_good_checkpoint"] == "training-state-00000006.pt"
    assert latest_training_state(tmp_path / "run").name == "training-state-00000006.pt"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_changed_settings_in_an_existing_run_dir_are_refused(
    tmp_path: Path, smoke_overrides
) -> None:
    training_loop(load_config(None, "smoke", [*smoke_overrides, "train.iterations=2"]),
                  tmp_path / "run", progress=False)
    changed = load_config(None, "smoke", [*smoke_overrides, "train.lr=0.001"])
    with pytest.raises(UserError, match="train.lr"):
        training_loop(changed, tmp_path / "run", progress=False)


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    config = load_config(None, "smoke", overrides)
    result = training_loop(config, run_dir, progress=False)
    torch.save({"generator": result.generator.state_dict(),
                "discriminator": result.discriminator.state_dict()},
               Path(run_dir).parent / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_cpu_ranks_hold_identical_weights(tmp_path: Path, smoke_overrides) -> None:
    overrides = [*smoke_overrides, "train.iterations=4", "train.batch_size=4"]
    load_config(None, "smoke", overrides)  # validate in the parent before spawning
    training_loop(load_config(None, "smoke", [*overrides, "train.iterations=1"]),
                  tmp_path / "warm", progress=False)  # generate the dataset cache once
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "run"), overrides), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for net in ("generator", "discriminator"):
        assert rank0[net].keys() == rank1[net].keys()
        assert all(torch.equal(rank0[net][k], rank1[net][k]) for k in rank0[net]), net
    initial = load_config(None, "smoke", overrides)
    from models.registry import get_model

    torch.manual_seed(initial.train.seed)
    fresh = get_model("3dssgan").build_generator(initial.model).state_dict()
    assert any(not torch.equal(fresh[k], rank0["generator"][k]) for k in fresh)  # it trained
    assert (tmp_path / "run" / "checkpoints").is_dir()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "train.lr=abc"], "train.lr = 'abc' is invalid"),
        (["--set", "model.lifting.function=cubic"], "model.lifting.function"),
        (["--set", "train.iteratons=3"], "did you mean 'train.iterations'"),
        (["missing.yaml"], "missing.yaml: config file not found"),
        (["--set", "model.name=nope"], "not a registered model"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args, expected) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.train", "--run-dir", str(tmp_path / "run"), *args],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing half-written


def _train_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`python -m harness.train ARGV` in this process: (exit code, stderr)."""
    code = run_main(main, build_parser(), ["--quiet", "--no-progress", *argv])
    return code, capsys.readouterr().err


def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  iterations: 3  # \u00e9t\u00e9\n".encode("latin-1"))
    code, err = _train_cli([str(path), "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 2
    assert err == f"error: {path}: not UTF-8 text (byte 26 is 0xe9); save the file as UTF-8, " \
        "or restore it if it was damaged\n"
    assert not (tmp_path / "run").exists()


def test_a_damaged_config_yaml_of_a_run_directory_is_one_line_and_kept(
    tmp_path: Path, smoke_overrides, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = b"preset: smoke\n\xff\xfe\x00garbage"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_bytes(damaged)
    sets = [arg for value in smoke_overrides for arg in ("--set", value)]
    code, err = _train_cli(["--run-dir", str(tmp_path / "run"), "--preset", "smoke", *sets],
                           capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {tmp_path / 'run' / 'config.yaml'}: not UTF-8 text")
    assert (tmp_path / "run" / "config.yaml").read_bytes() == damaged
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("fits", [2, 3], ids=["snapshot-fails", "state-fails"])
def test_a_full_disk_stops_training_with_one_line_and_exit_2_and_the_run_resumes(
    tmp_path: Path, smoke_overrides, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], fits: int
) -> None:
    run = tmp_path / "run"
    sets = [arg for value in [*smoke_overrides, "train.iterations=4", "train.checkpoint_every=2"]
            for arg in ("--set", value)]
    argv = ["--run-dir", str(run), "--preset", "smoke", *sets]
    # the checkpoint of iteration 2 (snapshot, state) fits, and with fits=3 the next snapshot;
    # then the disk is full
    fill_disk_in_torch_save(monkeypatch, room=4096, saves_first=fits)
    report_free(monkeypatch, 4096)
    code, err = _train_cli(argv, capsys)
    kind = {2: "network-snapshot", 3: "training-state"}[fits]
    path = checkpoint_dir(run) / f"{kind}-00000004.pt"
    assert code == 2
    assert re.fullmatch(rf"error: {re.escape(str(path))}: no space left on device \(writing it "
                        rf"needs about [\d.]+ [KM]iB, 4\.0 KiB free there\); {HINT}\n", err), err
    assert not [p.name for p in checkpoint_dir(run).iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(latest_training_state(run))["iteration"] == 2  # the last good one
    monkeypatch.undo()  # room again: the same command resumes from it
    assert _train_cli(argv, capsys) == (0, "")
    assert load_checkpoint(latest_training_state(run))["iteration"] == 4
    assert load_generator(run).iteration == 4
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in metrics] == [2, 4]


def test_a_second_trainer_of_a_run_directory_is_refused_and_writes_nothing(
    tmp_path: Path, smoke_overrides
) -> None:
    run = tmp_path / "run"
    sets = [arg for value in smoke_overrides for arg in ("--set", value)]
    with hold_run_dir(run):  # this process trains there
        result = subprocess.run(
            [sys.executable, "-m", "harness.train", "--run-dir", str(run), "--preset", "smoke",
             "--quiet", *sets], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"process {os.getpid()} on " in lines[0] and "is training this run" in lines[0]
    assert [path.name for path in run.iterdir()] == [".train.lock"]
    # the lock is gone with its holder: the same command trains now
    training_loop(load_config(None, "smoke", [*smoke_overrides, "train.iterations=2"]), run,
                  progress=False)


def test_a_wrong_data_path_leaves_the_run_directory_untouched(
    tmp_path: Path, smoke_overrides
) -> None:
    synthetic = load_config(None, "smoke", smoke_overrides)
    prepared = prepared_dataset_dir(synthetic.data, synthetic.model.resolution)
    real = [*smoke_overrides, "data.source=celebamask-hq", "train.iterations=2"]
    typo = load_config(None, "smoke", [*real, f"data.path={prepared}-typo"])
    with pytest.raises(UserError, match="folder not found"):
        training_loop(typo, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    fixed = load_config(None, "smoke", [*real, f"data.path={prepared}"])
    assert training_loop(fixed, tmp_path / "run", progress=False).iteration == 2


def test_training_removes_the_temporary_files_of_interrupted_checkpoint_writes(
    tmp_path: Path, smoke_overrides
) -> None:
    folder = checkpoint_dir(tmp_path / "run")
    killed = ("import os; from harness.io import atomic_write; "
              f"atomic_write({str(folder / 'training-state-00000002.pt')!r}, "
              "lambda file: os._exit(0))")  # a writer killed before its rename
    subprocess.run([sys.executable, "-c", killed], check=True, cwd=ROOT, timeout=600)
    (folder / ".network-snapshot-00000002.pt.k3x_9qzp.tmp").touch()  # mkstemp's, earlier
    others = [".other.pt.0123456789abcdef.tmp", "notes.tmp", ".config.yaml.0123456789abcdef.tmp"]
    for name in others:
        (folder / name).touch()
    assert len(list(folder.glob(".training-state-00000002.pt.*.tmp"))) == 1
    config = load_config(None, "smoke", [*smoke_overrides, "train.iterations=2",
                                         "train.checkpoint_every=2"])
    training_loop(config, tmp_path / "run", progress=False)
    assert sorted(path.name for path in folder.iterdir()) == sorted([
        *others, "network-snapshot-00000002.pt", "training-state-00000002.pt"])


def _iterations(run: Path, kind: str) -> list[int]:
    """The iterations of a run's `kind` checkpoints (network-snapshot, training-state)."""
    return sorted(int(path.name[-11:-3]) for path in checkpoint_dir(run).glob(f"{kind}-*.pt"))


def test_only_the_newest_snapshots_and_those_marked_to_keep_are_kept(tmp_path: Path) -> None:
    for keep, run in ((2, tmp_path / "pruned"), (0, tmp_path / "all")):
        for iteration in range(1, 6):
            save_checkpoint(run, iteration, {"iteration": iteration}, {"iteration": iteration},
                            keep_snapshots=keep)
            if iteration == 2:
                (checkpoint_dir(run) / "network-snapshot-00000002.pt.keep").touch()
    assert _iterations(tmp_path / "pruned", "network-snapshot") == [2, 4, 5]
    assert _iterations(tmp_path / "all", "network-snapshot") == [1, 2, 3, 4, 5]
    assert _iterations(tmp_path / "pruned", "training-state") == [4, 5]
    assert latest_snapshot(tmp_path / "pruned").name == "network-snapshot-00000005.pt"


def test_a_resumed_run_may_keep_fewer_snapshots_and_evaluates_its_newest(
    tmp_path: Path, smoke_overrides
) -> None:
    every = [*smoke_overrides, "train.checkpoint_every=1"]
    training_loop(load_config(None, "smoke", [*every, "train.iterations=3",
                                              "train.keep_snapshots=0"]),
                  tmp_path / "run", progress=False)
    assert _iterations(tmp_path / "run", "network-snapshot") == [1, 2, 3]
    training_loop(load_config(None, "smoke", [*every, "train.iterations=5",
                                              "train.keep_snapshots=2"]),
                  tmp_path / "run", progress=False)
    assert _iterations(tmp_path / "run", "network-snapshot") == [4, 5]
    assert load_generator(tmp_path / "run").iteration == 5


def test_path_length_step_trains_g_and_keeps_its_running_mean(smoke_overrides) -> None:
    """The lazy path-length step (SSGAN: weight 0.5 every 4 steps) changes G beyond the plain
    step, moves the running mean of path lengths off zero and logs the penalty."""
    from harness.data.loading import open_dataset
    from harness.runtime.cameras import camera_sampler
    from harness.training.loop import _real_batch, iteration_generator

    config = load_config(None, "smoke", smoke_overrides)
    dataset = open_dataset(config.data, config.model.resolution)
    image, mask = _real_batch(dataset, torch.arange(4), torch.device("cpu"))
    cameras = camera_sampler("prior", config)
    results = {}
    for path_length in (False, True):
        gan = step.build_gan(config, torch.device("cpu"))
        torch.manual_seed(0)
        losses = step.gan_step(gan, image, mask, cameras, iteration_generator(0, 0, 0, 2), 0,
                               regularize=False, path_length=path_length)
        results[path_length] = (gan, losses)
    (plain, plain_losses), (regularised, losses) = results[False], results[True]
    assert "path_length" in losses and "path_length" not in plain_losses
    assert torch.isfinite(losses["path_length"]) and regularised.path_length_mean > 0
    assert plain.path_length_mean == 0
    assert not _states_equal(plain.generator, regularised.generator)
    assert _states_equal(plain.discriminator, regularised.discriminator)  # G's step only


def test_a_full_disk_before_the_first_write_is_one_line_and_exit_2(
    tmp_path: Path, smoke_overrides, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock file's holder line (and any write outside the atomic writes) on a full disk."""
    import os as os_module

    def no_room(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os_module.strerror(errno.ENOSPC))  # (no file name)

    run = tmp_path / "run"
    lock = run / ".train.lock"
    monkeypatch.setattr(os_module, "pwrite", no_room)
    report_free(monkeypatch, 0)
    sets = [arg for value in smoke_overrides for arg in ("--set", value)]
    code, err = _train_cli(["--run-dir", str(run), "--preset", "smoke", *sets], capsys)
    assert code == 2
    assert err == f"error: {lock}: no space left on device (0 B free there); {HINT}\n"
