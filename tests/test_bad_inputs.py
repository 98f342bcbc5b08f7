"""A corpus of bad inputs, tried as a new user would, against the entry points.

The promise (README, "Usage"): a mistake in the input prints one line on stderr saying what is
wrong, where and how to fix it, exits with code 2, shows no traceback, and leaves nothing
half-written. Each case below builds its inputs in a fresh folder (also the working
directory, so default outputs such as `runs/` and `reports/` land there), runs the entry point
in this process (`harness.cli.run_main`, as `python -m harness.<verb> --quiet ARGV` would) and
checks:

- exit code 2 (argparse usage errors: its SystemExit(2));
- stderr, with the warnings logged meanwhile, is exactly one line: `error: ...`, or for
  argparse usage errors the project's `python -m harness.<verb>: error: ... (see --help)`;
- no exception escapes (a traceback for the user);
- the outputs the case names do not exist afterwards, and nothing in the folder was created,
  changed or removed.

Nothing expensive ever starts: training, trials, evaluation runs and benchmark timings are
replaced by a stub that fails the case, so an input that is not refused shows as a failure
within seconds.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from snapshots import save_untrained_snapshot

from harness.cli import run_main
from harness.config import config_to_dict, load_config

ENTRY_POINTS = {
    "train": "harness.train",
    "evaluate": "harness.evaluate",
    "sweep": "harness.sweep",
    "report": "harness.report.__main__",
    "data": "harness.data.__main__",
    "bench": "harness.bench.__main__",
    "invert": "harness.invert",
}
# One line: the harness's `error: ...`, or argparse's `python -m harness.<verb>[ sub]: error:`.
ERROR_LINE = re.compile(r"(?:python -m harness\.[a-z]+(?: [a-z-]+)?: )?error: \S.*")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
SWEEP_NAME = "bad"
REPORT_SWEEP = "demo"


class Started(BaseException):
    """Raised by the stubs standing in for training, trials, evaluation and benchmarks (a
    BaseException, so that no `except Exception` of the harness turns it into a result)."""


@dataclass
class Env:
    """The folder one case works in (its cwd), the session's data cache, shared snapshots."""

    root: Path
    cache: Path
    snapshots: dict[str, Path]
    dataset: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, name: str, content: str | bytes) -> Path:
        """A file `name` (parents created) holding `content`."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def run(self, name: str = "run", model: str = "3dssgan") -> Path:
        """A run directory holding an untrained smoke-preset network snapshot of `model`."""
        checkpoints = self.root / name / "checkpoints"
        checkpoints.mkdir(parents=True)
        shutil.copy(self.snapshots[model], checkpoints / "network-snapshot-00000000.pt")
        return self.root / name

    def smoke(self) -> list[str]:
        """Flags that keep a training run small and its data in the session cache."""
        return ["--preset", "smoke", "--set", f"data.cache_dir={self.cache}"]

    def sweep_file(self, file_name: str = "sweep.yaml", **fields: Any) -> str:
        """A smoke sweep file (two variants, one seed) with `fields` changed (None: removed)."""
        spec: dict[str, Any] = {
            "name": SWEEP_NAME, "preset": "smoke", "wandb": False, "seeds": [0],
            "overrides": {"data.cache_dir": str(self.cache)},
            "grid": {"variants": [{"name": "a1", "set": {"model.lifting.alpha": 1.0}},
                                  {"name": "a2", "set": {"model.lifting.alpha": 2.0}}]},
        }
        for key, value in fields.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
        return str(self.write(file_name, yaml.safe_dump(spec, sort_keys=False)))

    def report_runs(self, report: dict[str, Any] | str | None = None) -> None:
        """runs/demo/: a finished one-trial sweep as harness.sweep leaves it, its sweep.yaml
        with `report` as its report section (a string: the whole sweep.yaml)."""
        spec = {"name": REPORT_SWEEP, "report": report or {}}
        self.write(f"runs/{REPORT_SWEEP}/sweep.yaml",
                   report if isinstance(report, str) else yaml.safe_dump(spec))
        trial = "a1-s0-00000000"
        config = config_to_dict(load_config(None, "smoke", [f"tracking.group={REPORT_SWEEP}"]))
        metrics = {"fid": 50.0, "kid": 0.05, "kid_std": 0.01, "fid_extractor": "synthface-v2",
                   "iteration": 12, "seed": 0, "model": "3dssgan"}
        files = {"trial.json": json.dumps({"trial_id": trial, "sweep": REPORT_SWEEP,
                                           "variant": "a1", "seed": 0, "overrides": {},
                                           "model": "3dssgan", "preset": "smoke"}),
                 "config.yaml": yaml.safe_dump(config),
                 "metrics.json": json.dumps(metrics),
                 "result.json": json.dumps({"trial_id": trial, "status": "done",
                                            "metrics": metrics, "seconds": {}})}
        for name, text in files.items():
            self.write(f"runs/{REPORT_SWEEP}/{trial}/{name}", text)


# A case: builds its inputs in the Env, returns the command line and the outputs (paths
# relative to the Env's root) that must not exist afterwards.
Build = Callable[[Env], tuple[list[str], list[str]]]


@dataclass(frozen=True)
class Case:
    entry: str
    name: str
    build: Build
    marks: tuple[Any, ...] = field(default=())

    def param(self) -> Any:
        return pytest.param(self, id=f"{self.entry}-{self.name}", marks=self.marks)


CASES: list[Case] = []


def case(entry: str, name: str, marks: tuple[Any, ...] = ()) -> Callable[[Build], Build]:
    """Register the decorated builder as a case of `entry`."""
    assert entry in ENTRY_POINTS

    def register(build: Build) -> Build:
        CASES.append(Case(entry, name, build, marks))
        return build

    return register


def fixed(argv: list[str], outputs: list[str]) -> Build:
    """A builder that makes no files: `argv` and `outputs` as they are."""
    return lambda env: (list(argv), list(outputs))


def after(setup: Callable[[Env], Any], build: Build) -> Build:
    """`build`, once `setup` has made the files it needs."""
    def run(env: Env) -> tuple[list[str], list[str]]:
        setup(env)
        return build(env)
    return run


def argv_case(entry: str, name: str, argv: list[str], outputs: list[str],
              marks: tuple[Any, ...] = ()) -> None:
    """A case that needs no files."""
    case(entry, name, marks)(fixed(argv, outputs))


# What happens today to a device name torch does not know (train.device, --device).
NOT_UTF8 = "train:\n  iterations: 3  # \u00e9t\u00e9\n".encode("latin-1")
INVALID_YAML = "train:\n  iterations: [1, 2\n  lr: 0.001\n"

# ---- python -m harness.train ------------------------------------------------------------------


def _train_with_config(text: str | bytes, preset: bool = True) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        config = env.write("experiment.yaml", text)
        smoke = env.smoke() if preset else ["--set", f"data.cache_dir={env.cache}"]
        return [str(config), "--run-dir", "run", *smoke], ["run"]
    return build


def _train_with_sets(*sets: str) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        flags = [arg for value in sets for arg in ("--set", value)]
        return ["--run-dir", "run", *env.smoke(), *flags], ["run"]
    return build


case("train", "config-file-missing")(
    lambda env: (["experiment.yaml", "--run-dir", "run", *env.smoke()], ["run"]))
case("train", "config-is-a-directory")(
    lambda env: ([str(env.root), "--run-dir", "run", *env.smoke()], ["run"]))
case("train", "config-not-utf8")(_train_with_config(NOT_UTF8))
case("train", "config-invalid-yaml")(_train_with_config(INVALID_YAML))
case("train", "config-is-a-list")(_train_with_config("- train\n- model\n"))
case("train", "config-unknown-section")(_train_with_config("trainer:\n  iterations: 5\n"))
case("train", "config-unknown-key-typo")(_train_with_config("train:\n  iteration: 5\n"))
case("train", "config-section-not-a-mapping")(_train_with_config("train: 5\n"))
case("train", "config-iterations-not-a-number")(
    _train_with_config("train:\n  iterations: many\n"))
case("train", "config-unknown-preset")(_train_with_config("preset: tiny\n", preset=False))
case("train", "config-unknown-model")(_train_with_config("model:\n  name: stylegan9\n"))
case("train", "set-without-equals")(_train_with_sets("train.iterations"))
case("train", "set-without-key")(_train_with_sets("=3"))
case("train", "set-unknown-nested-key")(_train_with_sets("model.lifting.fucntion=gaussian"))
case("train", "set-negative-iterations")(_train_with_sets("train.iterations=-5"))
case("train", "set-iterations-scientific-notation")(_train_with_sets("train.iterations=1e3"))
case("train", "set-batch-size-zero")(_train_with_sets("train.batch_size=0"))
case("train", "set-negative-learning-rate")(_train_with_sets("train.lr=-0.001"))
case("train", "set-unknown-choice")(_train_with_sets("train.fake_cameras=random"))
case("train", "set-unknown-precision")(_train_with_sets("train.precision=fp16"))
case("train", "set-compile-unknown-network")(_train_with_sets("train.compile=[generator]"))
case("train", "set-compile-mode-without-networks")(
    _train_with_sets("train.compile_mode=reduce-overhead"))
case("train", "set-resolution-not-power-of-two")(_train_with_sets("model.resolution=48"))
case("train", "set-unknown-model")(_train_with_sets("model.name=stylegan9"))
case("train", "celebamask-without-path")(_train_with_sets("data.source=celebamask-hq"))
case("train", "celebamask-path-missing")(
    lambda env: _train_with_sets("data.source=celebamask-hq",
                                 f"data.path={env.path('CelebAMask-HQ')}")(env))
case("train", "device-cuda-without-gpu", marks=(NO_CUDA,))(_train_with_sets("train.device=cuda"))
case("train", "device-unknown-name")(_train_with_sets("train.device=tpu"))
argv_case("train", "preset-unknown", ["--run-dir", "run", "--preset", "tiny"], ["run"])
argv_case("train", "run-dir-flag-missing", ["--preset", "smoke"], ["runs"])


@case("train", "run-dir-is-a-file")
def _train_run_dir_is_a_file(env: Env) -> tuple[list[str], list[str]]:
    env.write("run", "my notes\n")
    return ["--run-dir", "run", *env.smoke()], []


@case("train", "existing-run-with-other-settings")
def _train_changed_settings(env: Env) -> tuple[list[str], list[str]]:
    config = load_config(None, "smoke", [f"data.cache_dir={env.cache}"])
    env.write("run/config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return (["--run-dir", "run", *env.smoke(), "--set", "model.lifting.alpha=2.0"],
            ["run/checkpoints", "run/metrics.jsonl", "run/samples"])


# ---- python -m harness.evaluate ---------------------------------------------------------------

EVAL_OUTPUTS = ["run/metrics.json", "run/eval"]


def _evaluate(*flags: str) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        env.run()
        return ["run", *flags], EVAL_OUTPUTS
    return build


argv_case("evaluate", "run-dir-missing", ["run"], EVAL_OUTPUTS)
argv_case("evaluate", "run-dir-argument-missing", ["--metrics", "fid"], [])
case("evaluate", "run-dir-is-a-file")(
    lambda env: ([str(env.write("run", "not a run\n"))], ["metrics.json", "eval"]))
case("evaluate", "run-dir-without-checkpoint")(
    after(lambda env: env.path("run").mkdir(), fixed(["run"], EVAL_OUTPUTS)))


@case("evaluate", "snapshot-file-missing")
def _evaluate_snapshot_missing(env: Env) -> tuple[list[str], list[str]]:
    env.run()
    return ["run", "--snapshot", "run/checkpoints/network-snapshot-00000099.pt"], EVAL_OUTPUTS


@case("evaluate", "snapshot-is-a-text-file")
def _evaluate_snapshot_garbage(env: Env) -> tuple[list[str], list[str]]:
    env.run()
    env.write("notes.pt", "these are my notes, not a snapshot\n")
    return ["run", "--snapshot", "notes.pt"], EVAL_OUTPUTS


@case("evaluate", "snapshot-is-a-plain-state-dict")
def _evaluate_snapshot_state_dict(env: Env) -> tuple[list[str], list[str]]:
    env.run()
    torch.save({"weight": torch.zeros(3)}, env.path("weights.pt"))
    return ["run", "--snapshot", "weights.pt"], EVAL_OUTPUTS


@case("evaluate", "newest-checkpoint-truncated")
def _evaluate_truncated(env: Env) -> tuple[list[str], list[str]]:
    snapshot = env.run() / "checkpoints" / "network-snapshot-00000000.pt"
    data = snapshot.read_bytes()
    snapshot.write_bytes(data[: len(data) // 2])
    return ["run"], EVAL_OUTPUTS


case("evaluate", "metrics-unknown-name")(_evaluate("--metrics", "fid,lpips"))
case("evaluate", "metrics-empty")(_evaluate("--metrics", ","))
case("evaluate", "num-samples-zero")(_evaluate("--num-samples", "0"))
case("evaluate", "num-samples-not-a-number")(_evaluate("--num-samples", "lots"))
case("evaluate", "seed-not-a-number")(_evaluate("--seed", "abc"))
case("evaluate", "device-unknown-name")(_evaluate("--device", "tpu"))
case("evaluate", "device-cuda-without-gpu", marks=(NO_CUDA,))(_evaluate("--device", "cuda"))
case("evaluate", "set-model-key")(_evaluate("--set", "model.w_dim=8"))
case("evaluate", "set-without-equals")(_evaluate("--set", "evaluate.cameras"))
case("evaluate", "set-unknown-choice")(_evaluate("--set", "evaluate.cameras=sideways"))
case("evaluate", "set-unknown-evaluate-key")(_evaluate("--set", "evaluate.fid_sample=10"))
case("evaluate", "wandb-and-no-wandb")(_evaluate("--wandb", "--no-wandb"))
case("evaluate", "inception-weights-not-on-disk")(
    _evaluate("--metrics", "fid", "--set", "evaluate.fid_extractor=inception-v3-compat"))
case("evaluate", "arcface-onnx-missing")(
    _evaluate("--metrics", "id", "--arcface-onnx", "w600k_r50.onnx"))
case("evaluate", "face-detector-without-arcface")(
    _evaluate("--metrics", "id", "--face-detector-onnx", "det_10g.onnx"))
case("evaluate", "arcface-missing-and-unused-inception-weights")(
    _evaluate("--metrics", "fid,id", "--inception-weights", "inception.pth",
              "--arcface-onnx", "w600k_r50.onnx"))


@case("evaluate", "inception-weights-garbage-file")
def _evaluate_inception_garbage(env: Env) -> tuple[list[str], list[str]]:
    env.write("inception.pth", "<html>404 not found</html>\n")
    return _evaluate("--metrics", "fid", "--set", "evaluate.fid_extractor=inception-v3-compat",
                     "--inception-weights", "inception.pth")(env)


@case("evaluate", "arcface-onnx-garbage-file")
def _evaluate_arcface_garbage(env: Env) -> tuple[list[str], list[str]]:
    env.write("w600k_r50.onnx", "<html>404 not found</html>\n")
    return _evaluate("--metrics", "id", "--arcface-onnx", "w600k_r50.onnx")(env)


# ---- python -m harness.sweep ------------------------------------------------------------------

SWEEP_OUTPUTS = [f"runs/{SWEEP_NAME}", f"reports/{SWEEP_NAME}"]


def _sweep(*flags: str, **fields: Any) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        return [env.sweep_file(**fields), *flags], SWEEP_OUTPUTS
    return build


def _sweep_text(text: str | bytes) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        return [str(env.write("sweep.yaml", text))], SWEEP_OUTPUTS
    return build


argv_case("sweep", "file-missing", ["sweeps/ablation_lifitng.yaml"], ["runs", "reports"])
case("sweep", "file-not-utf8")(_sweep_text(b"name: bad\ndescription: \xe9t\xe9\n"))
case("sweep", "file-invalid-yaml")(_sweep_text("name: bad\ngrid:\n  variants: [a, b\n"))
case("sweep", "file-is-a-list")(_sweep_text("- name: bad\n"))
case("sweep", "file-empty")(_sweep_text(""))
case("sweep", "name-missing")(_sweep(name=None))
case("sweep", "name-with-slash")(lambda env: (
    [env.sweep_file(name="my/sweep")], ["runs/my", "runs/my/sweep", "reports/my"]))
case("sweep", "unknown-key-typo")(_sweep(seed=[0, 1]))
case("sweep", "duplicate-seeds")(_sweep(seeds=[0, 0]))
case("sweep", "no-seeds")(_sweep(seeds=[]))
case("sweep", "unknown-model")(_sweep(model="stylegan9"))
case("sweep", "empty-variants")(_sweep(grid={"variants": []}))
case("sweep", "grid-key-with-no-values")(_sweep(grid={"train.lr": []}))
case("sweep", "duplicate-variant-names")(_sweep(grid={"variants": [
    {"name": "a", "set": {"model.lifting.alpha": 1.0}},
    {"name": "a", "set": {"model.lifting.alpha": 2.0}}]}))
case("sweep", "variant-sets-unknown-key")(_sweep(grid={"variants": [
    {"name": "a", "set": {"model.lifting.fucntion": "gaussian"}}]}))
case("sweep", "variant-sets-bad-value")(_sweep(grid={"variants": [
    {"name": "a", "set": {"train.batch_size": 0}}]}))
case("sweep", "reference-not-a-variant")(_sweep(reference="full"))
case("sweep", "unknown-metric")(_sweep(metrics=["fid", "lpips"]))
case("sweep", "metrics-empty")(_sweep(metrics=[]))
case("sweep", "eval-samples-retired")(_sweep(eval_samples=16))
case("sweep", "evaluate-metrics-override-unknown")(
    _sweep(overrides={"evaluate.metrics": ["fid", "lpips"]}))
case("sweep", "unknown-report-table")(_sweep(report={"tables": ["results"]}))
case("sweep", "search-without-trials")(_sweep(grid=None, search={
    "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.01}}}))
case("sweep", "data-flag-unknown")(_sweep("--data", "ffhq"))
case("sweep", "data-flag-folder-missing")(
    lambda env: _sweep("--data", f"celebamask-hq={env.path('CelebAMask-HQ')}")(env))
case("sweep", "preset-flag-unknown")(_sweep("--preset", "tiny"))
case("sweep", "executor-flag-unknown")(_sweep("--executor", "kubernetes"))
case("sweep", "max-parallel-zero")(_sweep("--max-parallel", "0"))
case("sweep", "only-unknown-trial")(_sweep("--only", "a3-s0-deadbeef"))
case("sweep", "set-without-equals")(_sweep("--set", "train.iterations"))
case("sweep", "slurm-profile-missing")(
    _sweep("--executor", "slurm", "--profile", "gpu-big"))


@case("sweep", "arcface-onnx-garbage-file")
def _sweep_arcface_garbage(env: Env) -> tuple[list[str], list[str]]:
    env.write("w600k_r50.onnx", "<html>404 not found</html>\n")
    return _sweep("--arcface-onnx", "w600k_r50.onnx", metrics=["id"])(env)


# ---- python -m harness.report -----------------------------------------------------------------

REPORT_OUTPUTS = ["reports"]


def _report(*flags: str, report: dict[str, Any] | str | None = None) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        env.report_runs(report)
        return list(flags), REPORT_OUTPUTS
    return build


case("report", "sweep-not-found")(_report("--sweep", "ablation_lifitng"))
argv_case("report", "runs-dir-missing", ["--sweep", REPORT_SWEEP], REPORT_OUTPUTS)
case("report", "runs-dir-flag-missing-folder")(
    _report("--sweep", REPORT_SWEEP, "--runs-dir", "experiments"))
case("report", "all-with-no-sweeps")(
    after(lambda env: env.path("runs").mkdir(), fixed(["--all"], REPORT_OUTPUTS)))
case("report", "format-unknown")(_report("--sweep", REPORT_SWEEP, "--formats", "md,html"))
case("report", "formats-empty")(_report("--sweep", REPORT_SWEEP, "--formats", ","))
case("report", "source-unknown")(_report("--sweep", REPORT_SWEEP, "--source", "s3"))
case("report", "source-local-with-path")(_report("--sweep", REPORT_SWEEP, "--source", "local",
                                                 "runs"))
case("report", "source-wandb-offline-without-folder")(
    _report("--sweep", REPORT_SWEEP, "--source", "wandb-offline"))
case("report", "source-wandb-offline-folder-missing")(
    _report("--sweep", REPORT_SWEEP, "--source", "wandb-offline", "wandb-files"))
case("report", "source-wandb-offline-folder-empty")(after(
    lambda env: env.path("wandb-files").mkdir(),
    _report("--sweep", REPORT_SWEEP, "--source", "wandb-offline", "wandb-files")))
argv_case("report", "neither-sweep-nor-all", [], REPORT_OUTPUTS)
case("report", "sweep-and-all")(_report("--sweep", REPORT_SWEEP, "--all"))
case("report", "unknown-table-in-sweep-file")(
    _report("--sweep", REPORT_SWEEP, report={"tables": ["results"]}))
case("report", "unknown-figure-in-sweep-file")(_report(
    "--sweep", REPORT_SWEEP, report={"tables": ["identity"], "figures": ["heatmap"]}))
case("report", "sweep-file-invalid-yaml")(
    _report("--sweep", REPORT_SWEEP, report="name: demo\nreport: {tables: [identity\n"))

# ---- python -m harness.data -------------------------------------------------------------------


def _celebamask_raw(env: Env, images: dict[str, bytes], poses: str | None = None) -> str:
    """A folder laid out like CelebAMask-HQ with these image files (and a pose file)."""
    (env.path("CelebAMask-HQ") / "CelebAMask-HQ-mask-anno" / "0").mkdir(parents=True,
                                                                    exist_ok=True)
    (env.path("CelebAMask-HQ") / "CelebA-HQ-img").mkdir(exist_ok=True)
    for name, content in images.items():
        env.write(f"CelebAMask-HQ/CelebA-HQ-img/{name}", content)
    if poses is not None:
        env.write("CelebAMask-HQ/CelebAMask-HQ-pose-anno.txt", poses)
    return "CelebAMask-HQ"


def _mask_of_image_0(env: Env) -> None:
    """A valid skin mask of image 0 (a PNG), so that the image itself is what is bad."""
    from PIL import Image

    path = env.path("CelebAMask-HQ/CelebAMask-HQ-mask-anno/0/00000_skin.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 32), 255).save(path)


def _celebamask(*flags: str, images: dict[str, bytes] | None = None,
                poses: str | None = None) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        raw = _celebamask_raw(env, images or {}, poses)
        return (["celebamask-hq", "--raw", raw, "--out", "celeba32", *flags],
                ["celeba32", "celeba32.staged", "celeba32.partial"])
    return build


argv_case("data", "no-subcommand", [], [])
argv_case("data", "unknown-subcommand", ["ffhq", "--out", "ffhq"], ["ffhq"])
argv_case("data", "synthetic-out-missing", ["synthetic", "--resolution", "32"], [])
argv_case("data", "synthetic-resolution-48", ["synthetic", "--out", "synth", "--resolution", "48"],
          ["synth"])
argv_case("data", "synthetic-one-identity", ["synthetic", "--out", "synth", "--identities", "1"],
          ["synth"])
argv_case("data", "synthetic-zero-views", ["synthetic", "--out", "synth", "--views", "0"],
          ["synth"])
argv_case("data", "synthetic-identities-not-a-number",
          ["synthetic", "--out", "synth", "--identities", "2.5k"], ["synth"])
case("data", "synthetic-out-is-a-file")(lambda env: (
    ["synthetic", "--out", str(env.write("synth", "notes\n")), "--identities", "2", "--views",
     "1", "--resolution", "32"], ["synth.partial", "synth.staged"]))
argv_case("data", "celebamask-raw-missing",
          ["celebamask-hq", "--raw", "CelebAMask-HQ", "--out", "celeba32", "--resolution", "32"],
          ["celeba32"])
case("data", "celebamask-raw-not-celebamask")(after(
    lambda env: env.write("photos/0.jpg", b"\xff\xd8\xff"),
    fixed(["celebamask-hq", "--raw", "photos", "--out", "celeba32", "--resolution", "32"],
          ["celeba32"])))
case("data", "celebamask-resolution-not-power-of-two")(_celebamask("--resolution", "100"))
case("data", "celebamask-resolution-missing")(_celebamask())
case("data", "celebamask-no-images")(_celebamask("--resolution", "32"))
case("data", "celebamask-pose-file-malformed")(_celebamask(
    "--resolution", "32", images={"0.jpg": b"\xff\xd8\xff"},
    poses="1\nYaw Pitch Raw\n0.jpg left up\n"))
case("data", "celebamask-image-without-masks")(_celebamask(
    "--resolution", "32", images={"0.jpg": b"<html>not a jpeg</html>"}))
case("data", "celebamask-undecodable-image")(after(_mask_of_image_0, _celebamask(
    "--resolution", "32", images={"0.jpg": b"<html>not a jpeg</html>"})))
case("data", "celebamask-skip-bad-but-every-image-bad")(after(_mask_of_image_0, _celebamask(
    "--resolution", "32", "--skip-bad", images={"0.jpg": b"<html>not a jpeg</html>"})))


@case("data", "celebamask-out-is-another-folder")
def _celebamask_out_taken(env: Env) -> tuple[list[str], list[str]]:
    raw = _celebamask_raw(env, {"0.jpg": b"\xff\xd8\xff"})
    env.write("thesis/chapter1.tex", "\\chapter{Intro}\n")
    return (["celebamask-hq", "--raw", raw, "--out", "thesis", "--resolution", "32"],
            ["thesis.staged", "thesis.partial"])


argv_case("data", "preview-dataset-missing", ["preview", "synth64", "--out", "p.png"], ["p.png"])
case("data", "preview-not-a-dataset")(after(
    lambda env: env.path("photos").mkdir(), fixed(["preview", "photos", "--out", "p.png"],
                                                  ["p.png"])))
case("data", "preview-out-not-png")(lambda env: (
    ["preview", str(env.dataset), "--out", "preview.jpg"], ["preview.jpg"]))
case("data", "preview-count-zero")(lambda env: (
    ["preview", str(env.dataset), "--out", "p.png", "--count", "0"], ["p.png"]))
case("data", "preview-count-negative")(lambda env: (
    ["preview", str(env.dataset), "--out", "p.png", "--count", "-3"], ["p.png"]))

# ---- python -m harness.bench ------------------------------------------------------------------

BENCH_OUTPUTS = ["bench.json"]


def _bench(*flags: str, run: str | None = None) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        if run is not None:
            env.run(model=run)
        return [*flags, "--json", "bench.json"], BENCH_OUTPUTS
    return build


case("bench", "section-unknown")(_bench("gpu"))
case("bench", "repeats-zero")(_bench("renderer", "--repeats", "0"))
case("bench", "repeats-not-a-number")(_bench("renderer", "--repeats", "three"))
case("bench", "ray-chunk-negative")(_bench("renderer", "--ray-chunk", "-512"))
case("bench", "guided-samples-zero")(_bench("depth-guided", "--guided-samples", "0"))
case("bench", "max-memory-not-a-number")(_bench("renderer", "--max-memory-gb", "12GB"))
case("bench", "run-dir-missing")(_bench("eval", "--run-dir", "run"))
case("bench", "run-dir-is-a-file")(
    after(lambda env: env.write("run", "notes\n"), _bench("eval", "--run-dir", "run")))
case("bench", "run-dir-without-checkpoint")(
    after(lambda env: env.path("run").mkdir(), _bench("eval", "--run-dir", "run")))
case("bench", "device-unknown-name")(_bench("renderer", "--device", "tpu"))
case("bench", "device-cuda-without-gpu", marks=(NO_CUDA,))(
    _bench("renderer", "--device", "cuda"))
case("bench", "depth-guided-on-a-cnerf-run")(
    _bench("depth-guided", "--run-dir", "run", "--skip-paper", run="cnerf"))
case("bench", "fid-extractor-unknown")(
    _bench("eval", "--run-dir", "run", "--fid-extractor", "inception", run="3dssgan"))
case("bench", "compile-mode-unknown")(_bench("train", "--compile-mode", "fast"))
case("bench", "trace-is-a-directory")(
    after(lambda env: env.path("trace").mkdir(), _bench("train", "--trace", "trace")))
case("bench", "triton-on-cpu-without-interpreter", marks=(pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="pytest runs Triton's interpreter"),))(
    _bench("renderer", "--triton", "--device", "cpu"))


@case("bench", "run-dir-checkpoint-garbage")
def _bench_garbage_checkpoint(env: Env) -> tuple[list[str], list[str]]:
    env.write("run/checkpoints/network-snapshot-00000100.pt", "partial download\n")
    return _bench("depth-guided", "--run-dir", "run", "--skip-paper")(env)


# ---- python -m harness.invert -----------------------------------------------------------------

INVERT_OUTPUTS = ["out"]


def _portrait(env: Env, name: str = "face.png", mode: str = "RGB", value: int = 128) -> str:
    from PIL import Image

    path = env.path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (40, 40), value).save(path)
    return name


def _invert(*flags: str, images: tuple[str, ...] = ("face.png",), run: bool = True,
            setup: Callable[[Env], Any] | None = None) -> Build:
    def build(env: Env) -> tuple[list[str], list[str]]:
        if run:
            env.run()
        for image in images:
            if image.endswith(".png") and not env.path(image).exists():
                _portrait(env, image)
        if setup is not None:
            setup(env)
        return ["run", *images, "--out", "out", *flags], INVERT_OUTPUTS
    return build


case("invert", "run-dir-missing")(_invert(run=False))
case("invert", "run-dir-without-checkpoint")(
    _invert(run=False, setup=lambda env: env.path("run").mkdir()))
case("invert", "image-missing")(_invert(images=("face.jpg",)))
case("invert", "image-is-text")(
    _invert(images=("notes.png",), setup=lambda env: env.write("notes.png", "hello\n")))
case("invert", "out-is-a-file")(
    lambda env: (_invert(setup=lambda e: e.write("out", "x\n"))(env)[0], []))
case("invert", "two-images-same-name")(_invert(images=("a/face.png", "b/face.png")))
case("invert", "masks-count-mismatch")(
    _invert("--masks", "m1.png", "m2.png",
            setup=lambda env: [_portrait(env, m, "L", 1) for m in ("m1.png", "m2.png")]))
case("invert", "mask-class-id-too-large")(
    _invert("--masks", "mask.png", setup=lambda env: _portrait(env, "mask.png", "L", 40)))
case("invert", "mask-is-colour")(
    _invert("--masks", "mask.png", setup=lambda env: _portrait(env, "mask.png", "RGB", 1)))
case("invert", "steps-zero")(_invert("--steps", "0"))
case("invert", "lr-negative")(_invert("--lr", "-0.1"))
case("invert", "identity-weight-nan")(_invert("--identity-weight", "nan"))
case("invert", "arcface-missing")(_invert("--arcface-onnx", "w600k_r50.onnx"))
case("invert", "snapshot-is-a-text-file")(
    _invert("--snapshot", "notes.pt", setup=lambda env: env.write("notes.pt", "notes\n")))
case("invert", "results-file-damaged")(
    lambda env: (_invert(setup=lambda e: e.write("out/inversion.json", "{oops"))(env)[0], []))


# ---- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> dict[str, Path]:
    """Untrained smoke-preset network snapshots of 3dssgan and cnerf (a snapshot is all a run
    directory needs for evaluation)."""
    root = tmp_path_factory.mktemp("snapshots")
    paths = {}
    for name in ("3dssgan", "cnerf"):
        config = load_config(None, "smoke", [f"model.name={name}",
                                             f"data.cache_dir={data_cache}"])
        paths[name] = save_untrained_snapshot(root / f"{name}.pt", config)
    return paths


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prepared synthetic dataset (2 identities, 1 view, 32 px) for `preview`."""
    from harness.data.synthetic import generate_synthetic

    path = tmp_path_factory.mktemp("prepared") / "synth32"
    generate_synthetic(path, identities=2, views=1, resolution=32, seed=0)
    return path


def _stub(what: str) -> Callable[..., Any]:
    def started(*args: Any, **kwargs: Any) -> Any:
        raise Started(f"the input was not refused: {what} started")
    return started


@pytest.fixture()
def nothing_expensive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training, trials, evaluation runs and benchmark timings fail the case instead."""
    import harness.bench.depth_guided
    import harness.bench.evaluation
    import harness.bench.models
    import harness.bench.renderer
    import harness.bench.training
    import harness.launch.trial
    import harness.metrics.suite
    import harness.studio.inversion
    import harness.training.loop

    for module, name in ((harness.training.loop, "build_gan"),
                         (harness.launch.trial, "train"), (harness.launch.trial, "evaluate"),
                         (harness.metrics.suite, "run_plan"),
                         (harness.bench.depth_guided, "interleaved_medians"),
                         (harness.bench.evaluation, "real_statistics"),
                         (harness.bench.renderer, "bench_renderer"),
                         (harness.bench.training, "bench_cpu_preset"),
                         (harness.bench.training, "bench_paper_step"),
                         (harness.bench.training, "bench_switches"),
                         (harness.bench.training, "trace_train_step"),
                         (harness.bench.models, "bench_models"),
                         (harness.studio.inversion, "invert")):
        monkeypatch.setattr(module, name, _stub(f"{module.__name__}.{name}"))


def _tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under `root` with its kind, size and modification time."""
    out = {}
    for path in root.rglob("*"):
        stat = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        out[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else stat.st_size,
                                            0 if kind == "dir" else stat.st_mtime_ns)
    return out


def _lock_in_existing_folder(path: str, before: dict[str, tuple[str, int, int]]) -> bool:
    """A lock file (`.train.lock`, `.driver.lock`) in a folder that was there before: what
    any command does to a run directory it opens, not output (a new folder is still found)."""
    parent = str(Path(path).parent)
    return path.endswith(".lock") and (parent in before or parent == ".")


def _invoke(entry: str, argv: list[str]) -> tuple[int | None, str | None]:
    """(exit code, None) of `python -m <entry> --quiet ARGV` in this process, or (None, the
    exception that escaped: a traceback for the user)."""
    module = importlib.import_module(ENTRY_POINTS[entry])
    extra = {"train": ["--no-progress"],
             "sweep": [] if "--executor" in argv else ["--executor", "local"]}.get(entry, [])
    try:
        return run_main(module.main, module.build_parser(), ["--quiet", *argv, *extra]), None
    except SystemExit as error:  # argparse (its own line is on stderr)
        return (error.code if isinstance(error.code, int) else 1), None
    except (Exception, Started) as error:  # noqa: BLE001 - any escape is the finding
        return None, f"{type(error).__name__}: {error}"


@pytest.fixture()
def env(tmp_path: Path, data_cache: Path, snapshots: dict[str, Path], prepared_dataset: Path,
        nothing_expensive: None, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A fresh working folder as the cwd; caches, torch's hub and W&B kept out of $HOME."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(data_cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no Inception weights
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    return Env(root, data_cache, snapshots, prepared_dataset)


# The inputs the cases break, unbroken: each is accepted (exit 0; the benchmark gets as far as
# its timings, the stub), so a case is refused for what it changes, not for something wrong in
# the common setup.
CONTROLS: dict[str, tuple[str, Build]] = {
    "train": ("train", lambda env: (["--run-dir", "run", *env.smoke(), "--dry-run"], [])),
    "evaluate": ("evaluate", after(lambda env: env.run(),
                                   fixed(["run", "--metrics", "views", "--dry-run"], []))),
    "sweep": ("sweep", lambda env: ([env.sweep_file(), "--dry-run"], [])),
    "report": ("report", _report("--sweep", REPORT_SWEEP,
                                 report={"tables": ["identity"], "figures": ["bars"]})),
    "data-preview": ("data", lambda env: (["preview", str(env.dataset), "--out", "p.png"], [])),
    "bench-eval": ("bench", _bench("eval", "--run-dir", "run", run="3dssgan")),
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_the_unbroken_inputs_are_accepted(
    control: str, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    entry, build = CONTROLS[control]
    argv, _ = build(env)
    code, escaped = _invoke(entry, argv)
    if entry == "bench":
        assert code is None and str(escaped).startswith("Started: "), escaped
    else:
        assert (code, escaped) == (0, None), capsys.readouterr().err


@pytest.mark.parametrize("bad", [c.param() for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    bad: Case, env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    root = env.root
    argv, outputs = bad.build(env)
    before = _tree(root)
    capsys.readouterr()
    caplog.set_level(logging.WARNING)
    caplog.clear()

    code, escaped = _invoke(bad.entry, argv)

    err = capsys.readouterr().err
    logged = [f"{r.levelname.lower()}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.WARNING]
    assert escaped is None, f"uncaught {escaped}\nstderr: {err}"
    lines = logged + err.splitlines()  # a user sees the log lines first
    assert code == 2, f"exit code {code}; stderr: {lines}"
    assert "Traceback" not in err
    assert len(lines) == 1 and err.endswith("\n"), f"not one line: {lines}"
    assert ERROR_LINE.fullmatch(lines[0]), f"not an error line: {lines[0]!r}"
    left = [name for name in outputs if (root / name).exists()]
    assert not left, f"left behind: {sorted(set(_tree(root)) - set(before))}"
    after = _tree(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                     and not _lock_in_existing_folder(k, before))
    assert not changed, f"created, changed or removed: {changed}"


def test_the_corpus_spans_every_entry_point() -> None:
    counts = {entry: sum(c.entry == entry for c in CASES) for entry in ENTRY_POINTS}
    assert all(count >= 4 for count in counts.values()), counts
    assert len({c.name for c in CASES if c.entry == "train"}) == counts["train"]
    assert len({(c.entry, c.name) for c in CASES}) == len(CASES) >= 40
