"""The report generator on a fabricated sweep: exact tables from run directories and from W&B
offline run files, idempotency, gaps shown as footnoted dashes, bad input, figures."""
# ruff: noqa: E501 - the expected tables below are written out literally, long lines included

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from snapshots import save_untrained_snapshot
from sweep_helpers import offline_runs

from harness.config import config_to_dict, flatten, resolve_config
from harness.io import atomic_write_json, atomic_write_yaml
from harness.report import build_report
from harness.report.sources import load_sweep
from harness.report.tables import PARTS, VIEWS, bootstrap_ci, machine_notes

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "demo"
UNREGISTERED = "fenerf"  # a model the zoo does not have
PART_BASE = {"mouth": 0.04, "eyes": 0.03, "brows": 0.035, "nose": 0.09, "hair": 0.2}
COMMON = {"fid_extractor": "synthface-v1", "kid_std": 0.001, "id_consistency_std": 0.05,
          "id_model": "synthface-v1", "num_samples/fid": 64, "num_samples/kid": 64,
          "num_samples/id": 16, "num_samples/disentangle": 4, "num_samples/views": 16,
          "checkpoint": "checkpoints/network-snapshot-00000012.pt", "iteration": 12, "seed": 0}
# trial id, variant, overrides, outcome, headline metrics, per-sample disentanglement CSV?
TRIALS: list[tuple[str, str, dict[str, Any], str, dict[str, float], bool]] = [
    ("t01", "full", {"train.seed": 0}, "done",
     {"fid": 20.0, "kid": 0.012, "id_consistency": 0.61, "view/photometric_l1": 0.05,
      "view/mask_miou": 0.71}, True),
    ("t02", "full", {"train.seed": 1}, "done",
     {"fid": 22.0, "kid": 0.014, "id_consistency": 0.63, "view/photometric_l1": 0.07,
      "view/mask_miou": 0.73}, True),
    ("t03", "nodepth", {"model.relative_depth": False}, "done",
     {"fid": 30.0, "kid": 0.02, "id_consistency": 0.5, "view/photometric_l1": 0.09,
      "view/mask_miou": 0.6}, True),
    ("t04", "noweights", {"model.mask_nerf_weights": False}, "eval-failed", {}, False),
    ("t05", "inverse-a2", {"model.lifting.function": "inverse_abs",
                              "model.lifting.alpha": 2.0}, "done",
     {"fid": 25.0, "kid": 0.016, "id_consistency": 0.58}, True),
    ("t06", "nodepth", {"model.relative_depth": False, "train.seed": 1}, "train-failed", {},
     False),
    ("t07", "cnerf", {"model.name": "cnerf"}, "done",
     {"fid": 40.0, "kid": 0.03, "id_consistency": 0.4}, False),
    ("t08", "full", {"train.seed": 2}, "incomplete", {}, False),
    ("t09", "fenerf", {"model.name": UNREGISTERED}, "done", {"fid": 50.0, "kid": 0.04}, False),
]


def history(index: int) -> list[dict[str, float]]:
    """metrics.jsonl rows of trial number `index`."""
    return [{"iteration": it, "train/d_loss": 1.5 - 0.1 * it - 0.02 * index,
             "train/g_loss": 2.0 + 0.05 * it + 0.03 * index, "train/it_per_s": 3.0}
            for it in (2, 4, 6)]


def trial_config(overrides: dict[str, Any]) -> dict[str, Any]:
    """A real resolved smoke config; a model the zoo does not have keeps only shared keys."""
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if overrides.get("model.name") == UNREGISTERED:
        config = config_to_dict(resolve_config({}, preset="smoke",
                                               overrides=[f"tracking.group={SWEEP}"]))
        config["model"] = {"name": UNREGISTERED, "num_parts": 13, "resolution": 32}
        return config
    return config_to_dict(resolve_config({}, preset="smoke",
                                         overrides=[*sets, f"tracking.group={SWEEP}"]))


def samples_frame(index: int) -> pd.DataFrame:
    """Per-sample disentanglement rows (eval/disentangle.csv) of trial number `index`."""
    rows = []
    for view in VIEWS:
        for part in PARTS:
            for sample in range(4):
                value = round(PART_BASE[part] + 0.002 * sample + 0.001 * index
                              + (0.005 if view == "random" else 0.0), 6)
                rows.append({"sample": sample, "part": part, "view": view, "what": "both",
                             "d_mean": value, "d_mean_masked": round(value / 2, 6)})
    return pd.DataFrame(rows)


def trial_metrics(index: int, model: str, headline: dict[str, float], with_csv: bool
                  ) -> dict[str, Any]:
    """metrics.json (contract 1) of a done trial."""
    metrics = {**COMMON, **headline, "model": model}
    if model == UNREGISTERED:
        return metrics
    if with_csv:
        means = samples_frame(index).groupby(["part", "view"])[["d_mean", "d_mean_masked"]].mean()
        for (part, view), row in means.iterrows():
            metrics[f"d_mean/{part}@{view}"] = round(float(row["d_mean"]), 6)
            metrics[f"d_mean_masked/{part}@{view}"] = round(float(row["d_mean_masked"]), 6)
    else:
        for part in PARTS:
            for view in VIEWS:
                metrics[f"d_mean/{part}@{view}"] = 2 * PART_BASE[part]
                metrics[f"d_mean_masked/{part}@{view}"] = PART_BASE[part]
    return metrics


def write_local_tree(runs: Path) -> None:
    """The fabricated sweep as run directories (contract 2)."""
    sweep_dir = runs / SWEEP
    atomic_write_yaml(sweep_dir / "sweep.yaml", {"name": SWEEP, "report": {
        "tables": ["disentanglement", "comparison", "ablation", "lifting", "identity",
                   "differences", "claims", "noise_floor"],
        "figures": ["curves", "bars"]}})
    for index, (trial, variant, overrides, outcome, headline, with_csv) in enumerate(TRIALS, 1):
        run_dir = sweep_dir / trial
        config = trial_config(overrides)
        atomic_write_json(run_dir / "trial.json", {
            "trial_id": trial, "sweep": SWEEP, "variant": variant,
            "seed": config["train"]["seed"], "overrides": overrides,
            "model": config["model"]["name"], "preset": "smoke"})
        atomic_write_yaml(run_dir / "config.yaml", config)
        rows = history(index)[:1] if outcome == "train-failed" else history(index)
        (run_dir / "metrics.jsonl").write_text(
            "".join(json.dumps({**row, "time": 1.7e9 + row["iteration"]}) + "\n"
                    for row in rows))
        if outcome == "done":
            metrics = trial_metrics(index, config["model"]["name"], headline, with_csv)
            atomic_write_json(run_dir / "metrics.json", metrics)
            if with_csv:
                (run_dir / "eval").mkdir()
                samples_frame(index).to_csv(run_dir / "eval" / "disentangle.csv", index=False)
            atomic_write_json(run_dir / "result.json", {
                "trial_id": trial, "status": "done", "metrics": metrics, "seconds": {}})
        elif outcome.endswith("failed"):
            stage = outcome.removesuffix("-failed")
            atomic_write_json(run_dir / "error.json", {
                "trial_id": trial, "stage": stage, "message": f"{stage} broke"})


def _wandb_run(root: Path, trial: str, config: dict[str, Any], job_type: str) -> Any:
    """An offline W&B run named as harness.tracking names a trial's runs; Tracker itself for a
    registered model, wandb directly for the unregistered one."""
    run_dir = root / trial
    if config["model"]["name"] != UNREGISTERED:
        from harness.tracking import Tracker

        return Tracker(resolve_config(config), run_dir, job_type=job_type, enabled=True)
    import wandb

    (run_dir / "wandb-files").mkdir(parents=True, exist_ok=True)
    run = wandb.init(project="ssgan3d-harness", group=SWEEP, job_type=job_type, mode="offline",
                     dir=str(run_dir / "wandb-files"),
                     name=trial if job_type == "train" else f"{trial}-{job_type}",
                     config=flatten(config))

    class Direct:  # the Tracker methods the fixture uses
        def log(self, values: dict[str, Any], iteration: int | None = None) -> None:
            run.log({**values, **({"iteration": iteration} if iteration is not None else {})})

        def summary(self, values: dict[str, Any]) -> None:
            run.summary.update(values)

        def finish(self, exit_code: int = 0) -> None:
            run.finish(exit_code=exit_code)

    return Direct()


def write_wandb_runs(root: Path) -> None:
    """The same sweep as W&B offline runs: a train run per trial, an eval run per evaluation."""
    import wandb

    for index, (trial, _, overrides, outcome, headline, with_csv) in enumerate(TRIALS, 1):
        config = trial_config(overrides)
        train = _wandb_run(root, trial, config, "train")
        for row in history(index)[:1] if outcome == "train-failed" else history(index):
            train.log({k: v for k, v in row.items() if k != "iteration"}, row["iteration"])
        train.finish(exit_code=1 if outcome == "train-failed" else 0)
        if outcome in ("done", "eval-failed"):
            evaluation = _wandb_run(root, trial, config, "eval")
            if outcome == "done":  # as harness.metrics.suite logs an evaluation
                metrics = trial_metrics(index, config["model"]["name"], headline, with_csv)
                evaluation.summary({f"eval/{key}": value for key, value in metrics.items()})
                tables = {"eval/metrics": wandb.Table(columns=["metric", "value"], data=[
                    [k, float(v)] for k, v in sorted(metrics.items())
                    if isinstance(v, int | float)])}
                if with_csv:  # the per-sample rows (eval/disentangle.csv) as a table
                    tables["eval/disentangle_samples"] = wandb.Table(
                        dataframe=samples_frame(index))
                evaluation.log(tables, iteration=12)
            evaluation.finish(exit_code=0 if outcome == "done" else 1)


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """W&B offline, its files under a temporary folder; restored after the module."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
            patch.setenv(variable, str(home))
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_local_tree(root)
    return root


@pytest.fixture(scope="module")
def wandb_root(tmp_path_factory: pytest.TempPathFactory, offline_env: None) -> Path:
    root = tmp_path_factory.mktemp("wandb-runs")
    write_wandb_runs(root)
    return root


@pytest.fixture(scope="module")
def local_report(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports")
    build_report([SWEEP], runs_dir=runs, out_dir=out)
    return out / SWEEP


def read(folder: Path, name: str) -> str:
    return (folder / "tables" / name).read_text()


# The fabricated sweep's tables, written out by hand-checkable rules: e.g. 3dssgan's FID over
# t01, t02, t03, t05 = 20, 22, 30, 25 -> 24.25 ± 4.35 (std, ddof 1), its view L1 over t01,
# t02, t03 = .05, .07, .09 -> 0.07 ± 0.02; the full model's FID over t01, t02, t05 -> 22.33 ±
# 2.52; mouth@frontal pools 16 samples .04 + .002 s + .001 i -> 0.04575, and the normal
# approximation of its 95% interval, 0.0457 ± 1.96 * 0.00268 / 4, agrees with the bootstrap's
# [0.0444, 0.0470].
EXPECTED = {
    "comparison.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**comparison**: Comparison (3D-SSGAN Table 2): semantic disentanglement and 3D awareness (from each model's design in the zoo), image quality (FID, KID) and measured view consistency (photometric reprojection error and mask mIoU between views); cells: mean [95% interval] over the n seeds of a row (Student t over seeds); n=1: one run, no interval

| Method | Semantic disentanglement | 3D-aware | FID ↓ | KID×100 ↓ | view L1 ↓ | mask mIoU ↑ | ΔKID×100 vs reference | Feature extractor | n | FID (paper, CelebAMask-HQ 512x512, Inception) |
|---|---|---|---:|---:|---:|---:|---|---|---:|---:|
| 3dssgan⁸ | Strong | ✓ | 24.25 [17.33, 31.17]¹ | 1.550 [1.006, 2.094]¹ | 0.0700 [0.0203, 0.1197]² | 0.680 [0.506, 0.854]³ | (reference) | synthface-v1 | 4 | 14.5 |
| cnerf | Strong | ✓ | 40.00 (n=1) | 3.000 (n=1) | —⁴ | —⁵ | +1.400 (n=1, untested) | synthface-v1 | 1 | — |
| fenerf | —⁹ | —⁹ | 50.00 (n=1) | 4.000 (n=1) | —⁶ | —⁷ | +2.400 (n=1, untested) | synthface-v1 | 1 | — |

- ¹ no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished)
- ² no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished); no view/photometric_l1 from trial t05 (not measured)
- ³ no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished); no view/mask_miou from trial t05 (not measured)
- ⁴ no view/photometric_l1 from trial t07 (not measured)
- ⁵ no view/mask_miou from trial t07 (not measured)
- ⁶ no view/photometric_l1 from trial t09 (not measured)
- ⁷ no view/mask_miou from trial t09 (not measured)
- ⁸ row pools trials t01, t02, t03, t04, t05, t06, t08, whose settings differ in model.lifting.alpha, model.lifting.function, model.mask_nerf_weights, model.relative_depth
- ⁹ model fenerf is not registered in the zoo (models/): its design is unknown
- Note: (paper) column: published FIDs of 3D-SSGAN Table 2 (30K real vs 50K generated images); comparable only with measured numbers of the same dataset and extractor
- Note: ΔKID×100: paired difference to the reference row (3dssgan) over the seeds both have, with its 95% interval (Student t over seeds); * marks an interval that excludes zero. KID decides significance (unbiased; FID at a few thousand samples is biased, Chong & Forsyth 2020); every metric's differences are in the differences table.
- Note: n=1 per row: one seed per setting, so nothing was tested; a comparison needs several seeds per arm (e.g. seeds: [0, 1, 2] in the sweep file).
""",
    "comparison.csv": """\
method,semantic_disentanglement,three_d_aware,fid,fid_ci_low,fid_ci_high,fid_std,kid_x100,kid_x100_ci_low,kid_x100_ci_high,kid_x100_std,view_photometric_l1,view_photometric_l1_ci_low,view_photometric_l1_ci_high,view_photometric_l1_std,view_mask_miou,view_mask_miou_ci_low,view_mask_miou_ci_high,view_mask_miou_std,delta_kid_x100,delta_kid_x100_ci_low,delta_kid_x100_ci_high,delta_kid_significant,fid_extractor,n,paper_fid
3dssgan,strong,True,24.25,17.32924628,31.17075372,4.34932945,1.55,1.006493823,2.093506177,0.3415650255,0.07,0.02031724576,0.1196827542,0.02,0.68,0.5061103602,0.8538896398,0.07,,,,,synthface-v1,4,14.5
cnerf,strong,True,40,,,,3,,,,,,,,,,,,1.4,,,,synthface-v1,1,
fenerf,,,50,,,,4,,,,,,,,,,,,2.4,,,,synthface-v1,1,
""",
    "ablation.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**ablation**: Ablation (3D-SSGAN Table 3): FID, KID, photometric reprojection error between views, mask mIoU across views and the class-frequency TV distance of generated masks to the data's; cells: mean [95% interval] over the n seeds of a row (Student t over seeds); n=1: one run, no interval

| Setting | FID ↓ | KID×100 ↓ | view L1 ↓ | mask mIoU ↑ | class TV ↓ | ΔKID×100 vs reference | Feature extractor | n | FID (paper, CelebAMask-HQ 512x512, Inception) |
|---|---:|---:|---:|---:|---|---|---|---:|---:|
| Full model⁸ | 22.33 [16.08, 28.58]¹ | 1.400 [0.903, 1.897]¹ | 0.0600 [-0.0671, 0.1871]² | 0.720 [0.593, 0.847]³ | —⁴ | (reference) | synthface-v1 | 3 | 14.5 |
| w/o relative depth | 30.00 (n=1)⁵ | 2.000 (n=1)⁵ | 0.0900 (n=1)⁵ | 0.600 (n=1)⁵ | —⁶ | +0.600 (n=1, untested) | synthface-v1 | 1 | 20.01 |
| w/o NeRF-based weights | —⁷ | —⁷ | —⁷ | —⁷ | —⁷ | — | — | 0 | 47.48 |

- ¹ no results from trial t08 (not finished)
- ² no results from trial t08 (not finished); no view/photometric_l1 from trial t05 (not measured)
- ³ no results from trial t08 (not finished); no view/mask_miou from trial t05 (not measured)
- ⁴ no results from trial t08 (not finished); no mask/class_tv from trial t01 (not measured), trial t02 (not measured), trial t05 (not measured)
- ⁵ no results from trial t06 (failed in train)
- ⁶ no results from trial t06 (failed in train); no mask/class_tv from trial t03 (not measured)
- ⁷ no results from trial t04 (failed in eval)
- ⁸ row pools trials t01, t02, t05, t08, whose settings differ in model.lifting.alpha, model.lifting.function
- Note: (paper) column: published FIDs of 3D-SSGAN Table 3 (CelebAMask-HQ, Inception, 30K real vs 50K generated images)
- Note: ΔKID×100: paired difference to the reference row (Full model) over the seeds both have, with its 95% interval (Student t over seeds); * marks an interval that excludes zero. KID decides significance (unbiased; FID at a few thousand samples is biased, Chong & Forsyth 2020); every metric's differences are in the differences table.
- Note: n=1 per row: one seed per setting, so nothing was tested; a comparison needs several seeds per arm (e.g. seeds: [0, 1, 2] in the sweep file).
""",
    "ablation.csv": """\
setting,relative_depth,mask_nerf_weights,fid,fid_ci_low,fid_ci_high,fid_std,kid_x100,kid_x100_ci_low,kid_x100_ci_high,kid_x100_std,view_photometric_l1,view_photometric_l1_ci_low,view_photometric_l1_ci_high,view_photometric_l1_std,view_mask_miou,view_mask_miou_ci_low,view_mask_miou_ci_high,view_mask_miou_std,mask_class_tv,mask_class_tv_ci_low,mask_class_tv_ci_high,mask_class_tv_std,delta_kid_x100,delta_kid_x100_ci_low,delta_kid_x100_ci_high,delta_kid_significant,fid_extractor,n,paper_fid
Full model,True,True,22.33333333,16.08172385,28.58494281,2.516611478,1.4,0.9031724576,1.896827542,0.2,0.06,-0.06706204736,0.1870620474,0.01414213562,0.72,0.5929379526,0.8470620474,0.01414213562,,,,,,,,,synthface-v1,3,14.5
w/o relative depth,False,True,30,,,,2,,,,0.09,,,,0.6,,,,,,,,0.6,,,,synthface-v1,1,20.01
w/o NeRF-based weights,True,False,,,,,,,,,,,,,,,,,,,,,,,,,,0,47.48
""",
    "lifting.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**lifting**: Lifting ablation (3D-SSGAN Sec. 4.2): FID and KID per lifting function psi and alpha (Eq. 7); cells: mean [95% interval] over the n seeds of a row (Student t over seeds); n=1: one run, no interval

| ψ | α | FID ↓ | KID×100 ↓ | ΔKID×100 vs reference | Feature extractor | n |
|---|---:|---:|---:|---|---|---:|
| gaussian² | 1 | 24.00 [10.86, 37.14]¹ | 1.533 [0.499, 2.568]¹ | (reference) | synthface-v1 | 3 |
| inverse_abs | 2 | 25.00 (n=1) | 1.600 (n=1) | +0.000 (n=1, untested) | synthface-v1 | 1 |

- ¹ no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished)
- ² row pools trials t01, t02, t03, t04, t06, t08, whose settings differ in model.mask_nerf_weights, model.relative_depth
- Note: 3D-SSGAN Sec. 4.2 reports no per-setting FIDs for the lifting ablation (alpha = 1 or 2, two symmetric inverse-proportional functions), only "consistent FID values which are around 14"
- Note: ΔKID×100: paired difference to the reference row (gaussian, alpha 1) over the seeds both have, with its 95% interval (Student t over seeds); * marks an interval that excludes zero. KID decides significance (unbiased; FID at a few thousand samples is biased, Chong & Forsyth 2020); every metric's differences are in the differences table.
- Note: n=1 per row: one seed per setting, so nothing was tested; a comparison needs several seeds per arm (e.g. seeds: [0, 1, 2] in the sweep file).
""",
    "lifting.tex": """\
% generated by python -m harness.report from sweep demo; do not edit
% needs \\usepackage{booktabs} and \\usepackage{amssymb}
\\begin{table}[t]
\\centering
\\footnotesize
\\caption{Lifting ablation (3D-SSGAN Sec. 4.2): FID and KID per lifting function psi and alpha (Eq. 7); cells: mean [95\\% interval] over the n seeds of a row (Student t over seeds); n=1: one run, no interval}
\\label{tab:demo-lifting}
\\begin{tabular}{lrrrllr}
\\toprule
$\\psi$ & $\\alpha$ & FID $\\downarrow$ & KID×100 $\\downarrow$ & ΔKID×100 vs reference & Feature extractor & n \\\\
\\midrule
gaussian\\textsuperscript{2} & 1 & 24.00 [10.86, 37.14]\\textsuperscript{1} & 1.533 [0.499, 2.568]\\textsuperscript{1} & (reference) & synthface-v1 & 3 \\\\
inverse\\_abs & 2 & 25.00 (n=1) & 1.600 (n=1) & +0.000 (n=1, untested) & synthface-v1 & 1 \\\\
\\bottomrule
\\end{tabular}
\\par\\smallskip\\raggedright
\\textsuperscript{1} no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished)\\\\
\\textsuperscript{2} row pools trials t01, t02, t03, t04, t06, t08, whose settings differ in model.mask\\_nerf\\_weights, model.relative\\_depth\\\\
Note: 3D-SSGAN Sec. 4.2 reports no per-setting FIDs for the lifting ablation (alpha = 1 or 2, two symmetric inverse-proportional functions), only "consistent FID values which are around 14"\\\\
Note: ΔKID×100: paired difference to the reference row (gaussian, alpha 1) over the seeds both have, with its 95\\% interval (Student t over seeds); * marks an interval that excludes zero. KID decides significance (unbiased; FID at a few thousand samples is biased, Chong \\& Forsyth 2020); every metric's differences are in the differences table.\\\\
Note: n=1 per row: one seed per setting, so nothing was tested; a comparison needs several seeds per arm (e.g. seeds: [0, 1, 2] in the sweep file).\\\\
\\end{table}
""",
    "identity.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**identity**: Image quality and multi-view identity consistency (IDE-3D Table 1 style): FID, KID and ID (mean cosine similarity of identity embeddings of one latent at two random poses); cells: mean [95% interval] over the n seeds of a row (Student t over seeds); n=1: one run, no interval

| Model | Dataset | FID ↓ | KID×100 ↓ | ID ↑ | Feature extractor | ID model | n | FID (paper, CelebAHQ-Mask 512x512) | KID×100 (paper, CelebAHQ-Mask 512x512) | ID (paper, CelebAHQ-Mask 512x512) |
|---|---|---:|---:|---:|---|---|---:|---|---|---|
| 3dssgan² | synthetic 32x32 | 24.25 [17.33, 31.17]¹ | 1.550 [1.006, 2.094]¹ | 0.580 [0.489, 0.671]¹ | synthface-v1 | synthface-v1 | 4 | — | — | — |
| cnerf | synthetic 32x32 | 40.00 (n=1) | 3.000 (n=1) | 0.400 (n=1) | synthface-v1 | synthface-v1 | 1 | — | — | — |
| fenerf | synthetic 32x32 | 50.00 (n=1) | 4.000 (n=1) | —³ | synthface-v1 | synthface-v1 | 1 | — | — | — |

- ¹ no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished)
- ² row pools trials t01, t02, t03, t04, t05, t06, t08, whose settings differ in model.lifting.alpha, model.lifting.function, model.mask_nerf_weights, model.relative_depth
- ³ no id_consistency from trial t09 (not measured)
- Note: (paper) columns: published numbers of IDE-3D Table 1 (CelebAHQ-Mask columns), copied as printed; its KIDs are x100 (FENeRF's scale), as the KID×100 column here
""",
    "identity.csv": """\
model,dataset,fid,fid_ci_low,fid_ci_high,fid_std,kid_x100,kid_x100_ci_low,kid_x100_ci_high,kid_x100_std,id_consistency,id_consistency_ci_low,id_consistency_ci_high,id_consistency_std,fid_extractor,id_model,n,paper_fid,paper_kid_x100,paper_id_consistency
3dssgan,synthetic 32x32,24.25,17.32924628,31.17075372,4.34932945,1.55,1.006493823,2.093506177,0.3415650255,0.58,0.4890540215,0.6709459785,0.05715476066,synthface-v1,synthface-v1,4,,,
cnerf,synthetic 32x32,40,,,,3,,,,0.4,,,,synthface-v1,synthface-v1,1,,,
fenerf,synthetic 32x32,50,,,,4,,,,,,,,synthface-v1,synthface-v1,1,,,
""",
    "disentanglement.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**disentanglement**: Semantic disentanglement (3D-SSGAN Table 1): mean difference D_mean and masked D_mean (edited part excluded) after replacing one part's latent codes (Eq. 14); mean over samples (n) with a 95% percentile bootstrap interval (1000 resamples, seed 0)

| Model | View | Edit | Part | D_mean ↓ | 95% CI | masked D_mean ↓ | 95% CI (masked) | n | D_mean (paper, CelebAMask-HQ 512x512) | masked D_mean (paper, CelebAMask-HQ 512x512) |
|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|
| 3dssgan² | frontal | both | mouth | 0.0457¹ | [0.0444, 0.0470] | 0.0229¹ | [0.0222, 0.0235] | 16 | 0.0413 | 0.0381 |
| 3dssgan² | frontal | both | eyes | 0.0358¹ | [0.0344, 0.0370] | 0.0179¹ | [0.0172, 0.0185] | 16 | 0.0340 | 0.0334 |
| 3dssgan² | frontal | both | brows | 0.0407¹ | [0.0394, 0.0420] | 0.0204¹ | [0.0197, 0.0210] | 16 | 0.0355 | 0.0225 |
| 3dssgan² | frontal | both | nose | 0.0958¹ | [0.0944, 0.0970] | 0.0479¹ | [0.0472, 0.0485] | 16 | 0.0891 | 0.0836 |
| 3dssgan² | frontal | both | hair | 0.2058¹ | [0.2044, 0.2070] | 0.1029¹ | [0.1022, 0.1035] | 16 | 0.2244 | 0.0848 |
| 3dssgan² | random | both | mouth | 0.0508¹ | [0.0494, 0.0520] | 0.0254¹ | [0.0247, 0.0260] | 16 | 0.0413 | 0.0381 |
| 3dssgan² | random | both | eyes | 0.0407¹ | [0.0394, 0.0420] | 0.0204¹ | [0.0197, 0.0210] | 16 | 0.0340 | 0.0334 |
| 3dssgan² | random | both | brows | 0.0457¹ | [0.0444, 0.0470] | 0.0229¹ | [0.0222, 0.0235] | 16 | 0.0355 | 0.0225 |
| 3dssgan² | random | both | nose | 0.1008¹ | [0.0994, 0.1020] | 0.0504¹ | [0.0497, 0.0510] | 16 | 0.0891 | 0.0836 |
| 3dssgan² | random | both | hair | 0.2107¹ | [0.2094, 0.2120] | 0.1054¹ | [0.1047, 0.1060] | 16 | 0.2244 | 0.0848 |
| cnerf | frontal | both | mouth | 0.0800 | —³ | 0.0400 | —³ | —³ | 0.0818 | 0.0658 |
| cnerf | frontal | both | eyes | 0.0600 | —³ | 0.0300 | —³ | —³ | 0.0509 | 0.0479 |
| cnerf | frontal | both | brows | 0.0700 | —³ | 0.0350 | —³ | —³ | 0.0452 | 0.0420 |
| cnerf | frontal | both | nose | 0.1800 | —³ | 0.0900 | —³ | —³ | 0.0583 | 0.0552 |
| cnerf | frontal | both | hair | 0.4000 | —³ | 0.2000 | —³ | —³ | 0.3111 | 0.1665 |
| cnerf | random | both | mouth | 0.0800 | —³ | 0.0400 | —³ | —³ | 0.0818 | 0.0658 |
| cnerf | random | both | eyes | 0.0600 | —³ | 0.0300 | —³ | —³ | 0.0509 | 0.0479 |
| cnerf | random | both | brows | 0.0700 | —³ | 0.0350 | —³ | —³ | 0.0452 | 0.0420 |
| cnerf | random | both | nose | 0.1800 | —³ | 0.0900 | —³ | —³ | 0.0583 | 0.0552 |
| cnerf | random | both | hair | 0.4000 | —³ | 0.2000 | —³ | —³ | 0.3111 | 0.1665 |
| fenerf | — | — | — | —⁴ | — | —⁴ | — | — | — | — |

- ¹ no results from trial t04 (failed in eval), trial t06 (failed in train), trial t08 (not finished)
- ² row pools trials t01, t02, t03, t04, t05, t06, t08, whose settings differ in model.lifting.alpha, model.lifting.function, model.mask_nerf_weights, model.relative_depth
- ³ no per-sample values (eval/disentangle.csv) from trial(s) t07: means over trials of metrics.json, no CI
- ⁴ no disentanglement values from trial t09 (not measured)
- Note: (paper, ...) columns: published numbers of 3D-SSGAN Table 1 (1,000 random portraits; the view is not stated), repeated on each view; not measured here
- Note: masked D_mean: no trial measured it
""",
    "disentanglement.csv": """\
model,view,what,part,d_mean,d_mean_ci_low,d_mean_ci_high,d_mean_masked,d_mean_masked_ci_low,d_mean_masked_ci_high,n,paper_d_mean,paper_d_mean_masked
3dssgan,frontal,both,mouth,0.04575,0.0444375,0.0470015625,0.022875,0.02221875,0.02350078125,16,0.0413,0.0381
3dssgan,frontal,both,eyes,0.03575,0.0344375,0.0370015625,0.017875,0.01721875,0.01850078125,16,0.034,0.0334
3dssgan,frontal,both,brows,0.04075,0.0394375,0.0420015625,0.020375,0.01971875,0.02100078125,16,0.0355,0.0225
3dssgan,frontal,both,nose,0.09575,0.0944375,0.0970015625,0.047875,0.04721875,0.04850078125,16,0.0891,0.0836
3dssgan,frontal,both,hair,0.20575,0.2044375,0.2070015625,0.102875,0.10221875,0.1035007813,16,0.2244,0.0848
3dssgan,random,both,mouth,0.05075,0.0494375,0.0520015625,0.025375,0.02471875,0.02600078125,16,0.0413,0.0381
3dssgan,random,both,eyes,0.04075,0.0394375,0.0420015625,0.020375,0.01971875,0.02100078125,16,0.034,0.0334
3dssgan,random,both,brows,0.04575,0.0444375,0.0470015625,0.022875,0.02221875,0.02350078125,16,0.0355,0.0225
3dssgan,random,both,nose,0.10075,0.0994375,0.1020015625,0.050375,0.04971875,0.05100078125,16,0.0891,0.0836
3dssgan,random,both,hair,0.21075,0.2094375,0.2120015625,0.105375,0.10471875,0.1060007812,16,0.2244,0.0848
cnerf,frontal,both,mouth,0.08,,,0.04,,,,0.0818,0.0658
cnerf,frontal,both,eyes,0.06,,,0.03,,,,0.0509,0.0479
cnerf,frontal,both,brows,0.07,,,0.035,,,,0.0452,0.042
cnerf,frontal,both,nose,0.18,,,0.09,,,,0.0583,0.0552
cnerf,frontal,both,hair,0.4,,,0.2,,,,0.3111,0.1665
cnerf,random,both,mouth,0.08,,,0.04,,,,0.0818,0.0658
cnerf,random,both,eyes,0.06,,,0.03,,,,0.0509,0.0479
cnerf,random,both,brows,0.07,,,0.035,,,,0.0452,0.042
cnerf,random,both,nose,0.18,,,0.09,,,,0.0583,0.0552
cnerf,random,both,hair,0.4,,,0.2,,,,0.3111,0.1665
fenerf,,,,,,,,,,,,
""",
    "differences.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**differences**: Paired differences of every arm to the reference arm, per metric

| Arm | Metric | n | Δ vs default | p | Detectable Δ (80% power) | Verdict |
|---|---|---:|---:|---|---|---|
| model.relative_depth=False | KID×100 (decides) | 1 | +0.800 (n=1, untested) | — | — | untested (n<2) |
| model.relative_depth=False | FID | 1 | +10.00 (n=1, untested) | — | — | untested (n<2) |
| model.relative_depth=False | ID | 1 | -0.110 (n=1, untested) | — | — | untested (n<2) |
| model.relative_depth=False | view L1 | 1 | +0.0400 (n=1, untested) | — | — | untested (n<2) |
| model.relative_depth=False | mask mIoU | 1 | -0.110 (n=1, untested) | — | — | untested (n<2) |
| model.mask_nerf_weights=False | — | 0 | — | — | — | no results |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | KID×100 (decides) | 1 | +0.400 (n=1, untested) | — | — | untested (n<2) |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | FID | 1 | +5.00 (n=1, untested) | — | — | untested (n<2) |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | ID | 1 | -0.030 (n=1, untested) | — | — | untested (n<2) |
| model.name=cnerf, model.beta_init=0.1, ... | KID×100 (decides) | 1 | +1.800 (n=1, untested) | — | — | untested (n<2) |
| model.name=cnerf, model.beta_init=0.1, ... | FID | 1 | +20.00 (n=1, untested) | — | — | untested (n<2) |
| model.name=cnerf, model.beta_init=0.1, ... | ID | 1 | -0.210 (n=1, untested) | — | — | untested (n<2) |
| model.name=fenerf | KID×100 (decides) | 1 | +2.800 (n=1, untested) | — | — | untested (n<2) |
| model.name=fenerf | FID | 1 | +30.00 (n=1, untested) | — | — | untested (n<2) |

- Note: Δ: arm minus reference (default) over the seeds both have, with its 95% interval (Student t over seeds; paired: arms that share a seed share data order, initialisation stream and evaluation latents and cameras); * and 'better'/'worse': the interval excludes zero; 'undecided': it does not. KID×100 decides significance (unbiased); FID at a few thousand samples is biased (Chong & Forsyth 2020). Detectable Δ: the smallest true difference a paired t test at these seeds and this spread finds with 80% probability.
- Note: Noise floor: no noise floor measured (no sweep noise_floor in the runs directory: python -m harness.sweep sweeps/noise_floor.yaml). This sweep's own seed-to-seed spread, arm by arm: tables/noise_floor.
""",
    "differences.csv": """\
arm,reference,metric,scale,n_pairs,difference,ci_low,ci_high,p_value,significant,detectable,deciding
model.relative_depth=False,default,kid,100,1,0.8,,,,,,True
model.relative_depth=False,default,fid,1,1,10,,,,,,False
model.relative_depth=False,default,id_consistency,1,1,-0.11,,,,,,False
model.relative_depth=False,default,view/photometric_l1,1,1,0.04,,,,,,False
model.relative_depth=False,default,view/mask_miou,1,1,-0.11,,,,,,False
model.mask_nerf_weights=False,default,,,0,,,,,,,
"model.lifting.alpha=2.0, model.lifting.function=inverse_abs",default,kid,100,1,0.4,,,,,,True
"model.lifting.alpha=2.0, model.lifting.function=inverse_abs",default,fid,1,1,5,,,,,,False
"model.lifting.alpha=2.0, model.lifting.function=inverse_abs",default,id_consistency,1,1,-0.03,,,,,,False
"model.name=cnerf, model.beta_init=0.1, ...",default,kid,100,1,1.8,,,,,,True
"model.name=cnerf, model.beta_init=0.1, ...",default,fid,1,1,20,,,,,,False
"model.name=cnerf, model.beta_init=0.1, ...",default,id_consistency,1,1,-0.21,,,,,,False
model.name=fenerf,default,kid,100,1,2.8,,,,,,True
model.name=fenerf,default,fid,1,1,30,,,,,,False
""",
    "noise_floor.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**noise_floor**: Noise floor: seed-to-seed spread of every metric (std over seeds with its 95% chi-square interval) and the smallest difference two arms of n seeds each resolve

| Arm | Metric | n | Mean | Std [95% CI] | Resolvable Δ, n=3 | Resolvable Δ, n=5 | Resolvable Δ, n=10 |
|---|---|---:|---:|---:|---:|---:|---:|
| default | KID×100 | 2 | 1.300 | 0.141 [0.063, 4.513] | 0.434 | 0.286 | 0.187 |
| default | FID | 2 | 21.00 | 1.41 [0.63, 45.13] | 4.34 | 2.86 | 1.87 |
| default | ID | 2 | 0.620 | 0.014 [0.006, 0.451] | 0.043 | 0.029 | 0.019 |
| default | view L1 | 2 | 0.0600 | 0.0141 [0.0063, 0.4513] | 0.0434 | 0.0286 | 0.0187 |
| default | mask mIoU | 2 | 0.720 | 0.014 [0.006, 0.451] | 0.043 | 0.029 | 0.019 |
| model.relative_depth=False | KID×100 | 1 | 2.000 | — | — | — | — |
| model.relative_depth=False | FID | 1 | 30.00 | — | — | — | — |
| model.relative_depth=False | ID | 1 | 0.500 | — | — | — | — |
| model.relative_depth=False | view L1 | 1 | 0.0900 | — | — | — | — |
| model.relative_depth=False | mask mIoU | 1 | 0.600 | — | — | — | — |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | KID×100 | 1 | 1.600 | — | — | — | — |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | FID | 1 | 25.00 | — | — | — | — |
| model.lifting.alpha=2.0, model.lifting.function=inverse_abs | ID | 1 | 0.580 | — | — | — | — |
| model.name=cnerf, model.beta_init=0.1, ... | KID×100 | 1 | 3.000 | — | — | — | — |
| model.name=cnerf, model.beta_init=0.1, ... | FID | 1 | 40.00 | — | — | — | — |
| model.name=cnerf, model.beta_init=0.1, ... | ID | 1 | 0.400 | — | — | — | — |
| model.name=fenerf | KID×100 | 1 | 4.000 | — | — | — | — |
| model.name=fenerf | FID | 1 | 50.00 | — | — | — | — |

- Note: Resolvable Δ: the smallest true difference between two arms of n seeds each that a two-sided t test at 95% finds with 80% probability, if every arm has this spread. KID×100 is KID x100.
""",
    "claims.md": """\
<!-- generated by python -m harness.report from sweep demo; do not edit -->
**claims**: 3D-SSGAN's ablation claims, measured: each arm against the reference arm

| Claim (3D-SSGAN) | Arm | Metric | Δ vs default | Detectable Δ | Verdict |
|---|---|---|---:|---|---|
| Table 3: w/o relative depth, FID 20.01 against 14.5 (realism drops) | model.relative_depth=False | KID×100 | +0.800 (n=1, untested) | — | untested (n<2) |
| Fig. 7: w/o relative depth, images and masks inconsistent across views (nose, mouth) | model.relative_depth=False | mask mIoU | -0.110 (n=1, untested) | — | untested (n<2) |
| Table 3: w/o NeRF-based weights in the mask renderer, FID 47.48 against 14.5 | model.mask_nerf_weights=False | KID×100 | — | — | untested (n<2) |
| Fig. 9: w/o NeRF-based weights, masks implausible from non-frontal views | model.mask_nerf_weights=False | mask mIoU | — | — | untested (n<2) |

- Note: Verdicts from the paired difference over seeds and its 95% interval (Student t over seeds): a claim that the change makes a metric worse is reproduced when the interval lies on the worse side of zero, not reproduced when it lies on the better side, undecided otherwise; a claim of no difference is not reproduced when the interval excludes zero and undecided otherwise (a t test cannot show equality; the detectable difference says how large a difference would have been found with 80% probability). The paper's FIDs are Inception FIDs on CelebAMask-HQ at 512 px; the measured differences are on the embedded synthetic data at the sweep's preset.
""",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_tables_are_exact(local_report: Path, name: str) -> None:
    assert read(local_report, name) == EXPECTED[name]


def test_wandb_offline_runs_give_the_same_tables(local_report: Path, wandb_root: Path,
                                                 tmp_path: Path) -> None:
    build_report([SWEEP], runs_dir=tmp_path / "no-runs", out_dir=tmp_path,
                 source="wandb-offline", source_path=str(wandb_root))
    local = sorted(p.name for p in (local_report / "tables").iterdir())
    assert local == sorted(p.name for p in (tmp_path / SWEEP / "tables").iterdir())
    assert len(local) == 24
    for name in local:
        assert read(tmp_path / SWEEP, name) == read(local_report, name), name


def test_one_normalisation_for_every_source(runs: Path, wandb_root: Path) -> None:
    local = load_sweep(SWEEP, "local", runs)
    offline = load_sweep(SWEEP, "wandb-offline", runs, str(wandb_root))
    shared = [c for c in local.trials.columns if c.startswith(("config.", "metrics."))]
    columns = ["trial_id", "status", "stage", *shared]
    assert sorted(shared) == sorted(c for c in offline.trials.columns
                                    if c.startswith(("config.", "metrics.")))
    pd.testing.assert_frame_equal(local.trials[columns], offline.trials[columns])
    pd.testing.assert_frame_equal(local.samples, offline.samples)
    history = local.history.columns.tolist()
    pd.testing.assert_frame_equal(local.history, offline.history[history])
    assert offline.trials.set_index("trial_id").loc["t04", "run_ids"].startswith("eval=")


def test_rebuilding_gives_byte_identical_tables_and_figures(runs: Path, local_report: Path,
                                                            tmp_path: Path) -> None:
    build_report([SWEEP], runs_dir=runs, out_dir=tmp_path)
    first = sorted(p for p in local_report.rglob("*") if p.is_file() and p.name != "README.md")
    assert {p.suffix for p in first} == {".md", ".tex", ".csv", ".png", ".pdf"}
    for path in first:
        again = tmp_path / SWEEP / path.relative_to(local_report)
        assert again.read_bytes() == path.read_bytes(), path.name


def test_index_lists_every_file_with_provenance(local_report: Path) -> None:
    index = (local_report / "README.md").read_text()
    for path in local_report.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert f"]({path.relative_to(local_report)})" in index
    assert f"- command: `python -m harness.report --sweep {SWEEP} --source local" in index
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    assert f"- git commit: {commit}" in index
    assert "- trials: 9 (6 done, 2 failed, 1 incomplete)" in index
    assert "- feature extractor: synthface-v1" in index
    assert "| t04 | noweights | 3dssgan | 0 | failed | — | — | stage eval: eval broke |" in index
    assert "fid 64, kid 64, id 16, disentangle 4, views 16" in index
    # the sweep file asked for curves and bars only; rendered figures are not attempted
    assert "editing" not in index


def test_gaps_and_broken_files_never_crash(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_local_tree(runs)
    sweep_dir = runs / SWEEP
    (sweep_dir / "t01" / "metrics.json").write_text("{not json")  # a torn file
    (sweep_dir / "t01" / "result.json").unlink()
    (sweep_dir / "t02" / "config.yaml").unlink()  # failed before training wrote it
    (sweep_dir / "t10").mkdir()
    atomic_write_json(sweep_dir / "t10" / "trial.json", {
        "trial_id": "t10", "sweep": SWEEP, "variant": "bad", "seed": 0, "model": "3dssgan",
        "preset": "smoke", "overrides": {"model.lifting.alpha": 3.0}})
    atomic_write_json(sweep_dir / "t10" / "error.json", {
        "trial_id": "t10", "stage": "train", "message": "config invalid"})
    build_report([SWEEP], runs_dir=runs, out_dir=tmp_path / "out")
    lifting = read(tmp_path / "out" / SWEEP, "lifting.md")
    # t01 lost its metrics (not finished), t02 its config (rebuilt from trial.json): FID of
    # t02, t03 = 22, 30: mean 26, std 5.657, 95% t interval 26 -+ 12.706 * 5.657 / sqrt 2;
    # KID x100 1.4, 2.0: 1.7 -+ 12.706 * 0.4243 / sqrt 2
    assert ("| gaussian³ | 1 | 26.00 [-24.82, 76.82]¹ | 1.700 [-2.112, 5.512]¹ | (reference) | "
            "synthface-v1 | 2 |") in lifting
    assert ("- ¹ no results from trial t01 (not finished), trial t04 (failed in eval), "
            "trial t06 (failed in train), trial t08 (not finished)") in lifting
    assert "| gaussian | 3 | —² | —² | — | — | 0 |" in lifting
    assert "- ² no results from trial t10 (failed in train)" in lifting


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from harness.cli import run_main
    from harness.report.__main__ import build_parser, main

    code = run_main(main, build_parser(), argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_input_is_one_line_and_exit_2(runs: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        ("--sweep", "nope", "--runs-dir", str(runs)): "no such sweep; sweeps in",
        ("--all", "--runs-dir", str(tmp_path / "missing")): "no runs directory",
        ("--sweep", SWEEP, "--source", "wandb-offline", str(tmp_path / "x")): "no such directory",
        ("--sweep", SWEEP, "--source", "wandb-offline"): "expected local, wandb",
        ("--sweep", SWEEP, "--runs-dir", str(runs), "--formats", "md,html"): "--formats md,html",
    }
    for argv, message in cases.items():
        code, out, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
        assert code == 2, argv
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_and_help(runs: Path) -> None:
    from harness.report.__main__ import build_parser

    bad = subprocess.run([sys.executable, "-m", "harness.report", "--sweep", "nope",
                          "--runs-dir", str(runs)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "--source SOURCE [PATH ...]" in build_parser().format_help()


def test_all_builds_every_sweep(runs: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--all", "--runs-dir", str(runs), "--out", str(tmp_path),
                            "--formats", "csv"], capsys)
    assert code == 0 and out == f"{tmp_path / SWEEP}\n"
    assert sorted(p.suffix for p in (tmp_path / SWEEP / "tables").iterdir()) == [".csv"] * 8


def test_bootstrap_interval() -> None:
    assert bootstrap_ci(np.full(10, 0.25)) == (0.25, 0.25)
    rng = np.random.default_rng(1)
    values = rng.normal(0.1, 0.02, 400)
    low, high = bootstrap_ci(values)
    half = 1.96 * values.std() / np.sqrt(len(values))  # the normal approximation
    assert abs((high - low) / 2 - half) < 0.1 * half
    assert low < values.mean() < high
    assert bootstrap_ci(values) == (low, high)  # fixed seed


def test_published_numbers_are_copied_from_the_papers() -> None:
    from harness.report import references as ref

    papers = Path("/work/shared/papers")
    if not papers.is_dir():
        pytest.skip("the papers' text is not on this machine")
    ssgan3d = next(papers.glob("001_*.txt")).read_text()
    ide3d = next(papers.glob("002_*.txt")).read_text()
    for model in ref.DISENTANGLEMENT.values():  # rows of Table 1: mouth, eye, brow, nose, hair
        for row in model.values():
            assert "\t".join(f"{value:.4f}" for value in row.values()) in ssgan3d
    for fid in (*ref.COMPARISON_FID.values(), *ref.ABLATION_FID.values()):
        assert f"\t{fid:g}" in ssgan3d
    assert "Ours 512^2\t4.6\t0.130\t0.76\t4.9\t0.135\t0.75" in ide3d
    assert ref.IDENTITY["ide3d"] == {"fid": 4.9, "kid": 0.135, "id_consistency": 0.75}


def test_offline_reader_reads_records_across_blocks(offline_env: None, tmp_path: Path) -> None:
    import wandb

    from harness.wandb_offline import BLOCK, read_offline_runs

    run = wandb.init(project="p", group="g", job_type="train", name="long", mode="offline",
                     dir=str(tmp_path), config={"a.b": 1, "c": [1, 2]})
    rows = [{"iteration": i, "train/a": i / 7, "train/b": 1.0 / (i + 1)} for i in range(400)]
    for row in rows:
        run.log(row)
    run.finish(exit_code=3)
    # wandb's writer process may still be flushing the file's tail when finish() returns
    # (seen: 1 in 8 reads right after it lacked the last 13 history rows and the exit record).
    deadline = time.monotonic() + 30
    while (found := read_offline_runs(tmp_path)[0]).state == "running":
        assert time.monotonic() < deadline, "the run file never got its exit record"
        time.sleep(0.2)
    (log_file,) = tmp_path.rglob("run-*.wandb")
    assert log_file.stat().st_size > 2 * BLOCK
    assert (found.name, found.group, found.job_type, found.state) == ("long", "g", "train",
                                                                      "failed")
    assert found.config["a.b"] == 1 and found.config["c"] == [1, 2]
    assert [{k: step[k] for k in row} for step, row in zip(found.history, rows,
                                                           strict=True)] == rows


def test_report_run_logs_tables_and_figures(runs: Path, offline_env: None,
                                            tmp_path: Path) -> None:
    shutil.copytree(runs, tmp_path / "runs")
    build_report([SWEEP], runs_dir=tmp_path / "runs", out_dir=tmp_path / "out", track=True)
    # wandb's service may still be writing the run file just after finish(): wait for it
    (run,) = offline_runs(tmp_path / "runs" / SWEEP / "wandb-files")
    assert (run.job_type, run.group, run.name, run.state) == ("report", SWEEP,
                                                              f"{SWEEP}-report", "finished")
    assert sorted(run.tables) == [f"tables/{name}" for name in sorted(
        ["disentanglement", "comparison", "ablation", "lifting", "identity", "differences",
         "claims", "noise_floor"])]
    logged = run.tables["tables/comparison"]
    assert logged["method"].tolist() == ["3dssgan", "cnerf", UNREGISTERED]
    assert logged["fid"].tolist() == pytest.approx([24.25, 40.0, 50.0])
    assert {k for k, v in run.summary.items() if isinstance(v, dict)
            and v.get("_type") == "image-file"} == {"figures/curves", "figures/bars"}


RENDERED_FIGURES = ["editing", "multiview", "progressive", "interpolation"]


@pytest.fixture(scope="module")
def figure_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep with an (untrained) 3D-SSGAN snapshot, and a setting without one."""

    root = tmp_path_factory.mktemp("figure-runs")
    atomic_write_yaml(root / "figs" / "sweep.yaml", {"name": "figs", "report": {
        "tables": ["comparison"], "figures": RENDERED_FIGURES}})
    for trial, overrides in (("f01", []), ("f02", ["model.relative_depth=false"])):
        config = resolve_config({}, preset="smoke", overrides=overrides)
        run_dir = root / "figs" / trial
        atomic_write_yaml(run_dir / "config.yaml", config_to_dict(config))
        atomic_write_json(run_dir / "trial.json", {
            "trial_id": trial, "sweep": "figs", "variant": f"variant-{trial}", "seed": 0,
            "overrides": {}, "model": "3dssgan", "preset": "smoke"})
        if trial == "f01":
            save_untrained_snapshot(
                run_dir / "checkpoints" / "network-snapshot-00000000.pt", config)
    return root


def test_rendered_figures(figure_runs: Path, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from harness.report import figures
    from harness.report.sources import load_local

    monkeypatch.setattr(figures, "PROGRESSIVE_ORDER", ("background", "face", "hair"))  # speed
    build_report(["figs"], runs_dir=figure_runs, out_dir=tmp_path)
    folder = tmp_path / "figs" / "figures"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{name}.{ext}" for name in sorted(RENDERED_FIGURES) for ext in ("pdf", "png")]
    for name in RENDERED_FIGURES:
        with Image.open(folder / f"{name}.png") as image:
            assert min(image.size) > 200
    index = (tmp_path / "figs" / "README.md").read_text()
    assert "- editing: drawn without f02: no network snapshot" in index
    reps, problems = figures.representatives(load_local("figs", figure_runs))
    assert [rep.label for rep in reps] == ["variant-f01"]
    again = figures.save_figure(figures.editing(reps), tmp_path / "again", "editing")
    assert again[0].read_bytes() == (folder / "editing.png").read_bytes()  # fixed seeds


def test_editing_uses_the_evaluations_difference_maps(tmp_path: Path) -> None:
    from harness.report.figures import _maps_from_eval

    parts, views = ["mouth", "eyes", "brows", "nose", "hair"], ["frontal", "random"]
    rng = np.random.default_rng(0)
    maps = {"original": rng.integers(0, 255, (2, 3, 3, 8, 8), dtype=np.uint8),
            "edited": rng.integers(0, 255, (2, 5, 3, 3, 8, 8), dtype=np.uint8),
            "difference": rng.random((2, 5, 3, 8, 8)),
            "region": rng.random((2, 5, 3, 8, 8)) > 0.8}
    (tmp_path / "eval").mkdir()
    np.savez_compressed(tmp_path / "eval" / "difference_maps.npz", parts=np.array(parts),
                        views=np.array(views), sample_axis=np.array("{}"), **maps)
    found = _maps_from_eval(tmp_path)
    assert [entry[0] for entry in found] == views
    view, original, edited, difference, region = found[1]
    assert original.shape == (8, 8, 3) and (original == maps["original"][1, 0]
                                            .transpose(1, 2, 0)).all()
    assert (edited == maps["edited"][1, 0, 0].transpose(1, 2, 0)).all()
    assert (difference == maps["difference"][1, 0, 0]).all()
    assert (region == maps["region"][1, 0, 0]).all()
    (tmp_path / "eval" / "difference_maps.npz").write_bytes(b"torn")
    assert _maps_from_eval(tmp_path) is None


def test_view_consistency_not_applicable_is_a_footnoted_dash(tmp_path: Path) -> None:
    """A 2D model's null view metrics with `view/not_applicable` show as a dash whose footnote
    names the trial, its model and why, not as "not measured"."""
    from harness.metrics.views import NO_DEPTH, NOT_APPLICABLE

    runs = tmp_path / "runs"
    write_local_tree(runs)
    run_dir = runs / SWEEP / "t10"
    config = trial_config({"model.name": "ssgan2d"})
    atomic_write_json(run_dir / "trial.json", {
        "trial_id": "t10", "sweep": SWEEP, "variant": "ssgan2d-s0", "seed": 0,
        "overrides": {"model.name": "ssgan2d"}, "model": "ssgan2d", "preset": "smoke"})
    atomic_write_yaml(run_dir / "config.yaml", config)
    metrics = {**COMMON, "model": "ssgan2d", "fid": 45.0, "kid": 0.025,
               "view/photometric_l1": None, "view/mask_miou": None, NOT_APPLICABLE: NO_DEPTH,
               "num_samples/views": 0}
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_json(run_dir / "result.json", {"trial_id": "t10", "status": "done",
                                                "metrics": metrics, "seconds": {}})
    build_report([SWEEP], runs_dir=runs, out_dir=tmp_path / "out")
    comparison = read(tmp_path / "out" / SWEEP, "comparison.md")
    assert ("| ssgan2d | Strong | ✗ | 45.00 (n=1) | 2.500 (n=1) | —⁸ | —⁸ | +0.900 (n=1, "
            "untested) | synthface-v1 | 1 | 5.7 |" in comparison), comparison
    assert ("- ⁸ view consistency not applicable to trial t10 (ssgan2d): the generator renders "
            "no depth map (a 2D model), so one view cannot be reprojected into another"
            in comparison)
    assert "t10 (not measured)" not in comparison


def _sweep_data(settings: list[tuple[list[str], dict[str, float]]]) -> Any:
    """Normalised done trials of smoke configs with the given overrides and metrics."""
    from harness.config import flatten
    from harness.report.sources import Trial, normalise

    trials = [Trial(f"t{index:02d}", "done", flatten(config_to_dict(resolve_config(
        {}, preset="smoke", overrides=overrides))), metrics=metrics)
        for index, (overrides, metrics) in enumerate(settings)]
    return normalise("bars", "local", trials, {})


def test_bars_draw_only_what_the_sweep_varies() -> None:
    from matplotlib.container import BarContainer, ErrorbarContainer

    from harness.report.figures import bars

    # the lifting sweep: four (function, alpha) pairs, two seeds each; Table 3's settings fixed
    pairs = [("gaussian", 1.0), ("gaussian", 2.0), ("inverse_abs", 1.0), ("inverse_square", 1.0)]
    lifting = _sweep_data([
        ([f"model.lifting.function={function}", f"model.lifting.alpha={alpha}",
          f"train.seed={seed}"], {"fid": 10.0 * (k + 1) + 2.0 * seed})
        for k, (function, alpha) in enumerate(pairs) for seed in (0, 1)])
    figure = bars(lifting)
    (axis,) = figure.axes
    assert axis.get_title() == "lifting ψ, α: FID ↓"
    assert [t.get_text() for t in axis.get_xticklabels()] == [
        "gaussian\nα=1", "gaussian\nα=2", "inverse_abs\nα=1", "inverse_square\nα=1"]
    (container,) = [c for c in axis.containers if isinstance(c, BarContainer)]
    assert [bar.get_height() for bar in container] == pytest.approx([11.0, 21.0, 31.0, 41.0])
    (interval,) = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
    segments = interval.lines[2][0].get_segments()  # 95% t interval over the two seeds:
    # values v, v + 2: standard error 1, half-width t(0.975, 1) = 12.706
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * 12.7062047] * 4)
    # the relative-depth sweep measured FID only: one panel, no empty view panels; one seed
    # per setting: no interval to draw, so no error bar at all
    depth = _sweep_data([([f"model.relative_depth={on}"], {"fid": fid})
                         for on, fid in (("true", 20.0), ("false", 21.0))])
    (single,) = bars(depth).axes
    assert single.get_title() == "FID ↓"
    assert not [c for c in single.containers if isinstance(c, ErrorbarContainer)]
    assert [t.get_text() for t in single.texts] == ["n=1", "n=1"]
    with_views = _sweep_data([([f"model.relative_depth={on}"], {
        "fid": 20.0, "view/photometric_l1": 0.1, "view/mask_miou": 0.5})
        for on in ("true", "false")])
    assert [axis.get_title() for axis in bars(with_views).axes] == [
        "FID ↓", "view L1 ↓", "mask mIoU ↑"]
    assert bars(_sweep_data([([], {"fid": 20.0}), (["train.seed=1"], {"fid": 21.0})])) is None


def _representative(model: str) -> Any:
    from harness.report.figures import Representative
    from models.registry import get_model

    torch.manual_seed(0)
    config = resolve_config({}, preset="smoke", overrides=[f"model.name={model}"])
    generator = get_model(model).build_generator(config.model).eval()
    return Representative(model, f"trial-{model}", Path("/nonexistent"), generator, model)


def test_progressive_leaves_out_holistic_models_and_shows_2d_models_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.report import figures

    monkeypatch.setattr(figures, "PROGRESSIVE_ORDER", ("background", "face"))  # speed
    reps = [_representative(model) for model in ("cnerf", "ide3d", "ssgan2d")]
    monkeypatch.setattr(figures, "representatives", lambda data: (reps, []))
    data = _sweep_data([([], {})])
    (result,) = figures.build_figures(["progressive"], data, tmp_path)
    why = ("ide3d (trial trial-ide3d): ide3d is a holistic model (one code for the whole face, "
           "no per-part generators): progressive generation is undefined")
    assert result.skipped is None and result.missing == [why]
    assert result.trials == ["trial-cnerf", "trial-ssgan2d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progressive.pdf", "progressive.png"]
    figure = figures.progressive([reps[0], reps[2]], [f"Not shown: {why}"])
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == [
        "cnerf\nleft", "mask", "cnerf\nfrontal", "mask", "cnerf\nright", "mask",
        "ssgan2d\nany view (2D)", "mask"]
    mosaic, footer = figure.subfigs  # the note under the mosaic, beside the class colours
    assert [t.get_text().replace("\n", " ") for t in footer.texts] == [f"Not shown: {why}"]
    assert [t.get_text() for t in footer.legends[0].get_texts()][:2] == ["background", "face"]
    # only holistic models: nothing to draw, and the reason is given
    monkeypatch.setattr(figures, "representatives", lambda data: ([reps[1]], []))
    (alone,) = figures.build_figures(["progressive"], data, tmp_path / "alone")
    assert alone.paths == [] and alone.skipped == why


def test_curves_keep_one_colour_per_trial_in_every_panel() -> None:
    from harness.report.figures import curves
    from harness.report.sources import Trial, normalise

    histories = {"a": [{"iteration": i, "train/shared": 1.0 * i, "train/only_a": 2.0}
                       for i in (1, 2)],
                 "b": [{"iteration": i, "train/shared": 0.5 * i, "train/only_b": 3.0}
                       for i in (1, 2)]}
    data = normalise("curves", "local", [Trial(name, "done", {}, variant=f"v-{name}",
                                               history=rows)
                                         for name, rows in histories.items()], {})
    figure = curves(data)
    panels = {axis.get_title(): axis for axis in figure.axes}
    legend = {text.get_text(): handle.get_color() for text, handle in zip(
        figure.legends[0].get_texts(), figure.legends[0].legend_handles, strict=True)}
    assert list(legend) == ["a (v-a)", "b (v-b)"]
    (only_b,) = panels["train/only_b"].get_lines()  # b alone: still b's colour, not the first
    assert only_b.get_color() == legend["b (v-b)"] != legend["a (v-a)"]
    assert [line.get_color() for line in panels["train/shared"].get_lines()] == list(
        legend.values())


def test_masked_difference_shows_the_edited_region_in_grey() -> None:
    """Excluded pixels must not look like "no change" (black in inferno)."""
    from harness.report.figures import EXCLUDED_GREY, PAD, _maps_rendered, editing

    rep = _representative("3dssgan")
    _, _, _, difference, region = _maps_rendered(rep.generator)[0]
    assert region.any() and (~region).any()
    mosaic = editing([rep]).axes[0].images[0].get_array()
    size = difference.shape[0]
    left = PAD + 3 * (size + PAD)  # column 3: the masked difference of row 0 (frontal)
    tile = np.asarray(mosaic[PAD : PAD + size, left : left + size])
    grey = int(EXCLUDED_GREY * 255)  # as the figure casts it
    assert (tile[region] == grey).all()
    assert not (tile[~region] == grey).all(-1).any()


def _arm_trials(arms: dict[str, tuple[list[str], list[float]]], reference: str | None) -> Any:
    """Done trials named as the sweep names them (<variant>-s<seed>-<hash>), one per seed,
    with the given KIDs."""
    from harness.config import flatten
    from harness.report.sources import Trial, normalise

    trials = [Trial(f"{name}-s{seed}-{index:08x}", "done", flatten(config_to_dict(
        resolve_config({}, preset="smoke", overrides=[*sets, f"train.seed={seed}"]))),
        metrics={"kid": kid, "fid": 100 * kid}, variant=name)
        for index, (name, (sets, kids)) in enumerate(arms.items())
        for seed, kid in enumerate(kids)]
    return normalise("paired", "local", trials, {}, reference)


def test_differences_pair_arms_by_seed_against_the_reference_arm() -> None:
    """Arm b = reference a + 0.01 at every seed plus +-0.001: a known shift, found; arm c
    differs by seed noise only: undecided. Numbers by hand: b - a = 1.1, 0.9, 1.0 (x100):
    mean 1.0, std 0.1, 95% t half-width 4.3027 * 0.1 / sqrt 3 = 0.248."""
    from harness.report.tables import differences

    data = _arm_trials({
        "a": (["model.lifting.alpha=1.0"], [0.020, 0.030, 0.025]),
        "b": (["model.lifting.alpha=2.0"], [0.031, 0.039, 0.035]),
        "c": (["model.lifting.alpha=3.0"], [0.025, 0.020, 0.030])}, reference="a")
    table = differences(data)
    kid = table.data[table.data["metric"] == "kid"].set_index("arm")
    assert kid.loc["b", "difference"] == pytest.approx(1.0)
    assert (kid.loc["b", "ci_low"], kid.loc["b", "ci_high"]) == pytest.approx(
        (1.0 - 0.2484, 1.0 + 0.2484), abs=1e-3)
    assert kid.loc["b", "significant"] and not kid.loc["c", "significant"]
    shown = table.display.set_index(["Arm", "Metric"])
    assert shown.loc[("b", "KID×100 (decides)"), "Verdict"] == "worse"  # KID: lower is better
    assert shown.loc[("c", "KID×100 (decides)"), "Verdict"] == "undecided"
    assert shown.loc[("b", "KID×100 (decides)"), "Δ vs a"] == "+1.000 [+0.752, +1.248] *"
    # the reference follows the sweep file: with c as reference, a and b are compared with c
    assert set(differences(_arm_trials({"a": (["model.lifting.alpha=1.0"], [0.02]),
                                        "c": (["model.lifting.alpha=3.0"], [0.03])}, "c"))
               .data["arm"]) == {"a"}


def test_reports_quote_the_noise_floor_of_their_setting(tmp_path: Path) -> None:
    from harness.report.sources import attach_noise_floor
    from harness.report.tables import differences

    runs = tmp_path / "runs"
    for seed, kid in enumerate([0.010, 0.014, 0.012]):
        run_dir = runs / "noise_floor" / f"default-s{seed}-0000000{seed}"
        config = trial_config({"train.seed": seed})
        atomic_write_json(run_dir / "trial.json", {"trial_id": run_dir.name, "variant": "default",
                                                   "seed": seed})
        atomic_write_yaml(run_dir / "config.yaml", config)
        metrics = {**COMMON, "kid": kid, "fid": 1000 * kid, "machine": "torch 0, CPU A"}
        atomic_write_json(run_dir / "metrics.json", metrics)
        atomic_write_json(run_dir / "result.json", {"trial_id": run_dir.name, "status": "done",
                                                    "metrics": metrics, "seconds": {}})
    atomic_write_yaml(runs / "noise_floor" / "sweep.yaml", {"name": "noise_floor"})
    data = _arm_trials({"a": ([], [0.02, 0.03]), "b": (["model.lifting.alpha=2.0"],
                                                      [0.02, 0.03])}, "a")
    attach_noise_floor(data, runs)
    notes = " ".join(differences(data).notes)
    # KID x100 over the floor's seeds: 1.0, 1.4, 1.2 -> std 0.2
    assert "Noise floor (sweep noise_floor, 3 seeds)" in notes
    assert "KID×100: std 0.200 [" in notes and "not resolved at n=2 seeds per arm" in notes
    longer = _arm_trials({"a": (["train.iterations=99"], [0.02])}, "a")
    attach_noise_floor(longer, runs)  # another budget: the floor does not stand for it
    assert longer.noise_floor is None and "must match in" in longer.noise_floor_source
    for machine, source in (("torch 0, CPU A", "sweep noise_floor, 3 seeds"),
                            ("torch 0, CPU B", "sweep noise_floor, 3 seeds, trained on torch 0, "
                                               "CPU A (this sweep: torch 0, CPU B)")):
        elsewhere = _arm_trials({"a": ([], [0.02, 0.03])}, "a")
        elsewhere.trials["metrics.machine"] = machine
        attach_noise_floor(elsewhere, runs)  # quoted, naming the other machine
        assert elsewhere.noise_floor is not None and elsewhere.noise_floor_source == source


def test_claims_get_verdicts_from_the_paired_intervals() -> None:
    """The w/o-relative-depth arm's KID is worse at every seed (Table 3's claim reproduced);
    the lifting alpha=2 arm differs by seed noise only (the paper's "about the same":
    undecided, never "reproduced"); the NeRF-weights arm is better (not reproduced)."""
    from harness.report.tables import claims

    data = _arm_trials({
        "full": ([], [0.020, 0.030, 0.025]),
        "no-relative-depth": (["model.relative_depth=false"], [0.031, 0.039, 0.035]),
        "no-nerf-weights": (["model.mask_nerf_weights=false"], [0.010, 0.021, 0.014]),
        "alpha-2": (["model.lifting.alpha=2.0"], [0.025, 0.020, 0.030])}, reference="full")
    table = claims(data).data.set_index(["arm", "metric"])
    assert table.loc[("no-relative-depth", "kid"), "verdict"] == "reproduced"
    assert table.loc[("no-nerf-weights", "kid"), "verdict"].startswith("not reproduced")
    assert table.loc[("alpha-2", "kid"), "verdict"] == "undecided at this budget"
    assert ("no-relative-depth", "view/mask_miou") in table.index  # Fig. 7's claim, no data
    assert table.loc[("no-relative-depth", "view/mask_miou"), "n_pairs"] == 0
    one_seed = _arm_trials({"full": ([], [0.02]),
                            "w": (["model.relative_depth=false"], [0.03])}, "full")
    assert set(claims(one_seed).data["verdict"]) == {"untested (n<2)"}


def test_the_statistics_name_the_machines_and_warn_when_a_comparison_mixes_them() -> None:
    amd, intel = "torch 2.14.1, AVX512, AMD EPYC", "torch 2.14.1, AVX512, Intel Xeon"
    one = pd.DataFrame({"metrics.machine": [amd, amd], "metrics.machine/train": [amd, None]})
    assert machine_notes(one) == [f"machine: {amd} (2 trial(s))"]  # eval machine: fallback
    mixed = pd.DataFrame({"metrics.machine": [amd, amd, intel],
                          "metrics.machine/train": [f"{intel}; {amd}", amd, intel]})
    (line,) = machine_notes(mixed)
    assert line.startswith(f"**trials trained on 2 machines**: {amd} (2 trial(s)); {intel} "
                           "(2 trial(s)).") and "one kind of machine" in line
    assert machine_notes(pd.DataFrame({"metrics.fid": [1.0]})) == [
        "machines: not recorded (trials evaluated before the harness recorded them)"]


def test_arms_that_differ_in_how_they_run_stay_apart() -> None:
    """A sweep of a speed switch (compiled or not, another device) compares two arms: the keys
    that trial ids ignore because a resumed run may change them still set arms apart."""
    from harness.report.tables import differences

    data = _arm_trials({"eager": ([], [0.020, 0.030]),
                        "compiled": (["train.compile=[render_net]"], [0.021, 0.031]),
                        "channels-last": (["train.channels_last=true"], [0.022, 0.032])},
                       reference="eager")
    kid = differences(data).data
    assert set(kid[kid["metric"] == "kid"]["arm"]) == {"compiled", "channels-last"}
