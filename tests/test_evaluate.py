"""`python -m harness.evaluate` / `evaluate_run` on a smoke-preset run: every metric, the files
of the contract, offline W&B, and the one-line errors for missing inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from snapshots import save_untrained_snapshot

from harness.cli import run_main
from harness.config import load_config
from harness.data.classes import CLASS_NAMES
from harness.evaluate import build_parser, evaluate_run, main
from harness.reproducibility import machine
from harness.training.loop import training_loop
from models.registry import get_model, model_names

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("mouth", "eyes", "brows", "nose", "hair")
METRICS = ("fid", "kid", "id", "disentangle", "views", "classes")
CONTRACT_KEYS = {
    "fid", "kid", "kid_std", "fid_extractor", "id_consistency", "id_consistency_std", "id_model",
    "view/photometric_l1", "view/mask_miou", "checkpoint", "iteration", "seed", "model",
    "mask/class_tv", *(f"mask/{kind}/{name}" for kind in ("class_freq", "class_freq_data")
                       for name in CLASS_NAMES),
    *(f"{kind}/{part}@{view}" for kind in ("d_mean", "d_mean_masked") for part in PARTS
      for view in ("frontal", "random")),
    *(f"{kind}/{metric}" for kind in ("num_samples", "seconds", "images_per_second")
      for metric in METRICS),
}
EXTRA_KEYS = {"preset", "fid_real_images", "fid_real_cached", "fid_cameras", "disentangle_what",
              "d_mean_masked_average", "d_mean_masked_region", "threads", "deterministic",
              "machine", "machine/train"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained smoke-preset 3D-SSGAN run (4 iterations) with its own data cache."""
    root = tmp_path_factory.mktemp("evaluate")
    config = load_config(None, "smoke", [f"data.cache_dir={root / 'cache'}", "train.iterations=4",
                                         "train.checkpoint_every=4", "train.sample_every=4"])
    training_loop(config, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def evaluated(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The default metric set with offline W&B tracking."""
    patch = pytest.MonkeyPatch()
    patch.setenv("WANDB_MODE", "offline")
    try:
        values = evaluate_run(run_dir, track=True)
    finally:
        patch.undo()
    return values


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(main, build_parser(), argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_metrics_json_has_exactly_the_contract_keys(run_dir: Path, evaluated: dict) -> None:
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written == json.loads(json.dumps(evaluated))
    assert set(written) == CONTRACT_KEYS | EXTRA_KEYS
    assert written["checkpoint"] == "checkpoints/network-snapshot-00000004.pt"
    assert written["iteration"] == 4 and written["seed"] == 0 and written["model"] == "3dssgan"
    assert written["fid_extractor"] == "synthface-v2" and written["id_model"] == "synthface-v2"
    assert written["machine"] == written["machine/train"] == machine("cpu")  # trained here too
    config = load_config(run_dir / "config.yaml")
    assert written["num_samples/fid"] == config.evaluate.fid_samples == 32
    assert written["num_samples/disentangle"] == config.evaluate.disentangle_samples
    assert written["fid"] > 0 and -1 <= written["id_consistency"] <= 1
    assert 0 <= written["view/mask_miou"] <= 1
    assert 0 <= written["mask/class_tv"] <= 1
    for metric in METRICS:
        assert written[f"seconds/{metric}"] > 0 and written[f"images_per_second/{metric}"] > 0


def test_per_sample_disentanglement_and_difference_maps(run_dir: Path, evaluated: dict) -> None:
    table = pd.read_csv(run_dir / "eval" / "disentangle.csv")
    assert list(table.columns) == ["sample", "part", "view", "what", "d_mean", "d_mean_masked"]
    samples = evaluated["num_samples/disentangle"]
    assert len(table) == samples * len(PARTS) * 2
    mouth = table[(table.part == "mouth") & (table.view == "frontal")]
    assert mouth.d_mean.mean() == pytest.approx(evaluated["d_mean/mouth@frontal"])
    with np.load(run_dir / "eval" / "difference_maps.npz") as maps:
        assert list(maps["parts"]) == list(PARTS)
        kept = load_config(run_dir / "config.yaml").evaluate.difference_maps
        assert maps["difference"].shape[:3] == (2, len(PARTS), kept)
        assert maps["original"].dtype == np.uint8


def test_offline_wandb_eval_run_has_the_summary(run_dir: Path, evaluated: dict) -> None:
    eval_id = (run_dir / "wandb_run_id.eval").read_text().strip()
    files = list((run_dir / "wandb-files" / "wandb").glob(f"offline-run-*-{eval_id}/*.wandb"))
    assert len(files) == 1
    read = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(files[0])],
                          capture_output=True, text=True, timeout=120, check=True)
    record = json.loads(read.stdout)
    summary = record["summary"]
    assert summary["fid"] == pytest.approx(evaluated["fid"])
    assert summary["d_mean/hair@random"] == pytest.approx(evaluated["d_mean/hair@random"])
    assert summary["eval/disentanglement"]["_type"] == "table-file"
    assert summary["eval/disentanglement"]["nrows"] == len(PARTS) * 2


def test_offline_wandb_eval_run_has_per_sample_disentanglement_rows(
    run_dir: Path, evaluated: dict,
) -> None:
    """The eval run's table eval/disentanglement_samples holds eval/disentangle.csv's rows."""
    eval_id = (run_dir / "wandb_run_id.eval").read_text().strip()
    runs = list((run_dir / "wandb-files" / "wandb").glob(f"offline-run-*-{eval_id}"))
    assert len(runs) == 1
    read = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json",
                           str(next(runs[0].glob("*.wandb")))],
                          capture_output=True, text=True, timeout=120, check=True)
    entry = json.loads(read.stdout)["summary"]["eval/disentanglement_samples"]
    rows = len(PARTS) * 2 * evaluated["num_samples/disentangle"]
    assert entry["_type"] == "table-file" and entry["nrows"] == rows
    table = json.loads((runs[0] / "files" / entry["path"]).read_text())
    assert table["columns"] == ["sample", "part", "view", "what", "d_mean", "d_mean_masked"]
    csv = pd.read_csv(run_dir / "eval" / "disentangle.csv")
    assert len(table["data"]) == len(csv) == rows
    for logged, (_, row) in zip(table["data"], csv.iterrows(), strict=True):
        assert logged[:4] == [row["sample"], row["part"], row["view"], row["what"]]
        assert logged[4] == pytest.approx(row["d_mean"], rel=1e-6)
        masked = np.nan if logged[5] is None else logged[5]
        assert masked == pytest.approx(row["d_mean_masked"], rel=1e-6, nan_ok=True)


def test_cli_prints_extractor_names_and_merges_metrics(
    run_dir: Path, evaluated: dict, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _cli([str(run_dir), "--metrics", "kid,views", "--num-samples", "6",
                         "--no-wandb", "--quiet"], capsys)
    assert code == 0
    assert "KID (synthface-v2, not Inception) = " in out and "FID" not in out
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["num_samples/views"] == 6 and written["num_samples/kid"] == 6
    # The same checkpoint and seed: the earlier FID stays beside the new numbers.
    assert written["fid"] == evaluated["fid"] and written["num_samples/fid"] == 32
    code, out, _ = _cli([str(run_dir), "--metrics", "fid", "--num-samples", "8", "--seed", "1",
                         "--no-wandb", "--quiet"], capsys)
    assert code == 0 and "FID (synthface-v2, not Inception) = " in out
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["seed"] == 1 and "view/mask_miou" not in written  # another seed: replaced


def test_results_do_not_depend_on_batch_size(run_dir: Path) -> None:
    small = evaluate_run(run_dir, metrics="id,views", num_samples=6, seed=5, track=False,
                         overrides=["evaluate.batch_size=4"])
    large = evaluate_run(run_dir, metrics=["id", "views"], num_samples=6, seed=5, track=False,
                         overrides=["evaluate.batch_size=16"])
    for key in ("id_consistency", "view/photometric_l1", "view/mask_miou"):
        assert small[key] == pytest.approx(large[key], rel=1e-4), key


@pytest.mark.parametrize("name", [n for n in model_names() if n != "3dssgan"])
def test_every_zoo_model_is_measured_through_its_own_edit_part(
    name: str, tmp_path: Path,
) -> None:
    """Untrained smoke generators of the other zoo models (a snapshot is all a run needs)."""
    config = load_config(None, "smoke", [f"model.name={name}"])
    save_untrained_snapshot(tmp_path / "checkpoints" / "network-snapshot-00000000.pt", config)
    values = evaluate_run(tmp_path, metrics="disentangle,views", num_samples=2, track=False)
    assert all(0 <= values[f"d_mean/{part}@frontal"] < 1 for part in PARTS)
    if get_model(name).three_d_aware:
        assert 0 <= values["view/mask_miou"] <= 1
    else:  # a 2D model renders no depth: nothing to reproject
        assert values["view/mask_miou"] is None and values["view/photometric_l1"] is None


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_run_dir_without_snapshots(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "harness.evaluate", str(tmp_path / "empty")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert "no network snapshot" in _one_error_line(result.stderr)
    assert "Traceback" not in result.stderr


def test_a_missing_snapshot_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "run" / "checkpoints" / "network-snapshot-00000099.pt"
    missing.parent.mkdir(parents=True)
    code, _, err = _cli([str(tmp_path / "run"), "--snapshot", str(missing)], capsys)
    assert code == 2
    assert _one_error_line(err).startswith(f"error: {missing}: snapshot file not found")


def test_missing_weights_are_one_line_errors(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    # A run trained on real data: the same snapshot with a CelebAMask-HQ data config.
    real = tmp_path / "real-run"
    snapshot = torch.load(run_dir / "checkpoints" / "network-snapshot-00000004.pt",
                          weights_only=True)
    snapshot["config"]["data"] |= {"source": "celebamask-hq", "path": str(tmp_path / "celeba")}
    (real / "checkpoints").mkdir(parents=True)
    torch.save(snapshot, real / "checkpoints" / "network-snapshot-00000004.pt")

    code, _, err = _cli([str(real), "--metrics", "fid"], capsys)
    line = _one_error_line(err)
    assert code == 2 and "cannot download" in line and "--inception-weights" in line
    code, _, err = _cli([str(real), "--metrics", "kid", "--inception-weights",
                         str(tmp_path / "nope.pth")], capsys)
    assert code == 2 and str(tmp_path / "nope.pth") in _one_error_line(err)
    (tmp_path / "notes.txt").write_text("not weights\n")
    code, _, err = _cli([str(real), "--metrics", "fid", "--inception-weights",
                         str(tmp_path / "notes.txt")], capsys)
    assert code == 2 and "notes.txt: not Inception weights" in _one_error_line(err)
    code, _, err = _cli([str(real), "--metrics", "id"], capsys)
    assert code == 2 and "--arcface-onnx" in _one_error_line(err)
    code, _, err = _cli([str(run_dir), "--metrics", "id", "--arcface-onnx",
                         str(tmp_path / "w600k_r50.onnx")], capsys)
    assert code == 2 and "w600k_r50.onnx" in _one_error_line(err)
    code, _, err = _cli([str(run_dir), "--metrics", "fid,lpips"], capsys)
    assert code == 2 and "'lpips'" in _one_error_line(err)
    code, _, err = _cli([str(run_dir), "--set", "model.w_dim=8"], capsys)
    assert code == 2 and "evaluate." in _one_error_line(err)
    assert not (real / "metrics.json").exists()


def test_dry_run_checks_inputs_and_measures_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    before = (run_dir / "metrics.json").read_text() if (run_dir / "metrics.json").exists() else ""
    code, out, _ = _cli([str(run_dir), "--dry-run", "--num-samples", "5"], capsys)
    assert code == 0 and "fid: 5 samples, extractor synthface-v2" in out
    after = (run_dir / "metrics.json").read_text() if (run_dir / "metrics.json").exists() else ""
    assert before == after


def test_the_same_command_gives_the_same_numbers(run_dir: Path, tmp_path: Path) -> None:
    """Training and evaluation again at the same config (thread count included) reproduce
    every number; the thread count is part of the resolved config and of metrics.json."""
    config = load_config(run_dir / "config.yaml")
    assert config.train.threads >= 1 and config.train.deterministic is False
    training_loop(config, tmp_path / "again", progress=False)
    timing = ("seconds/", "images_per_second/")
    first, second = (
        {key: value for key, value in evaluate_run(path, metrics="fid,views,classes",
                                                     track=False).items()
         if not key.startswith(timing)}
        for path in (run_dir, tmp_path / "again"))
    assert first == second and first["threads"] == config.train.threads


def test_a_metric_outside_the_default_set_runs_when_named(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The depth metric (registered with default=False): `--metrics depth` runs it and
    writes its keys to metrics.json; the CLI prints its line."""
    code = run_main(main, build_parser(), [str(run_dir), "--metrics", "depth", "--num-samples",
                                           "4", "--quiet"])
    assert code == 0
    assert "depth per class: mean |generated - data| = " in capsys.readouterr().out
    values = json.loads((run_dir / "metrics.json").read_text())
    assert values["depth/class_mae"] > 0 and values["num_samples/depth"] == 4
    assert values["depth/class_mean_data/face"] > 0
