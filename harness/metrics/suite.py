"""The evaluation suite of one run directory: plan, run the metrics, write and track results.

Outputs (all written atomically):
    RUN_DIR/metrics.json               flat: values, extractor names, sample counts, seeds,
                                       seconds and images/s per metric, checkpoint evaluated
    RUN_DIR/eval/disentangle.csv       sample,part,view,what,d_mean,d_mean_masked
    RUN_DIR/eval/difference_maps.npz   a few samples' images, edits and difference maps
A later evaluation of the same checkpoint and seed updates metrics.json (so metrics can be
added one at a time); a different checkpoint or seed replaces it. FID and KID share one set of
generated images: when both run, their seconds and images/s are that shared computation's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.config import ExperimentConfig, config_to_dict, resolve_config
from harness.errors import UserError
from harness.io import atomic_write, atomic_write_json, atomic_write_text
from harness.metrics import registry
from harness.metrics.disentangle import DISENTANGLE_COLUMNS, MAP_SAMPLE_AXIS, PARTS, VIEWS
from harness.metrics.fid import choose_extractor
from harness.metrics.generation import MetricContext, MetricResult, Stopwatch, keep_freed_memory
from harness.metrics.identity import Embedder, choose_embedder
from harness.reproducibility import apply_reproducibility, machine
from harness.runtime.checkpoint import LoadedGenerator, load_generator
from harness.runtime.device import resolve_device
from harness.training.loop import trained_on

log = logging.getLogger(__name__)

METRICS = registry.names(default_only=True)  # the default set, in running order
METRICS_FILE = "metrics.json"
EVAL_DIR = "eval"
# Config keys an evaluation may override (the rest describe the trained model and its data).
OVERRIDABLE = ("evaluate.", "data.path", "data.cache_dir", "data.workers", "train.threads",
               "train.deterministic")


@dataclass
class Plan:
    """What an evaluation will do, resolved and checked before any image is generated."""

    run_dir: Path
    loaded: LoadedGenerator
    config: ExperimentConfig
    metrics: list[str]
    counts: dict[str, int]  # metric -> latents (FID: generated images)
    seed: int
    extractor: tuple[str, Path | None] | None  # FID/KID extractor name and weights
    embedder: Embedder | None

    def describe(self) -> str:
        """A few lines for --dry-run and the log."""
        lines = [f"checkpoint {self.loaded.path} (iteration {self.loaded.iteration}, "
                 f"model {self.config.model.name}, data {self.config.data.source}, "
                 f"preset {self.config.preset})"]
        for metric in self.metrics:
            detail = ""
            if metric in ("fid", "kid") and self.extractor:
                detail = (f", extractor {self.extractor[0]}, cameras "
                          f"{self.config.evaluate.cameras}")
            if metric == "id" and self.embedder:
                detail = f", embedder {self.embedder.name}"
                if self.embedder.crop_method:
                    detail += f" on {self.embedder.crop_method}"
            lines.append(f"  {metric}: {self.counts[metric]} samples{detail}")
        return "\n".join(lines)


def parse_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """The requested metrics in running order; a UserError names an unknown one."""
    if metrics is None:
        return list(METRICS)
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [name.strip() for name in names if name.strip()]
    try:
        return registry.in_running_order(names)
    except ValueError as error:
        raise UserError(f"--metrics {','.join(names)}: {error}") from None


def sample_counts(config: ExperimentConfig) -> dict[str, int]:
    """Samples per metric: its `evaluate.*` count."""
    return {name: getattr(config.evaluate, registry.get(name).samples)
            for name in registry.names()}


def with_choices(
    config: ExperimentConfig,
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    weights: dict[str, str | Path | None] | None = None,
) -> ExperimentConfig:
    """`config` with an evaluation's explicit choices folded into `evaluate.*`: the metrics,
    one sample count for every metric, weight files (evaluate.inception_weights,
    arcface_onnx, face_detector_onnx); None leaves the config's value."""
    changes: dict[str, Any] = {}
    if metrics is not None:
        changes["metrics"] = parse_metrics(metrics)
    if num_samples is not None:
        if num_samples < 2:
            raise UserError(f"--num-samples {num_samples}: need at least 2 samples per metric")
        changes |= {registry.get(name).samples: num_samples for name in registry.names()}
    changes |= {name: str(path) for name, path in (weights or {}).items() if path is not None}
    return config.model_copy(update={"evaluate": config.evaluate.model_copy(update=changes)})


def _with_overrides(config: ExperimentConfig, overrides: Sequence[str] | None
                    ) -> ExperimentConfig:
    if not overrides:
        return config
    for text in overrides:
        if not text.split("=", 1)[0].strip().startswith(OVERRIDABLE):
            raise UserError(
                f"--set {text!r}: an evaluation can only change {', '.join(OVERRIDABLE)} "
                "(the other keys describe the trained model)"
            )
    return resolve_config(config_to_dict(config), "checkpoint config", overrides=list(overrides))


def plan_evaluation(
    run_dir: str | Path,
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    inception_weights: str | Path | None = None,
    arcface_onnx: str | Path | None = None,
    face_detector_onnx: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    overrides: Sequence[str] | None = None,
    snapshot: str | Path | None = None,
) -> Plan:
    """Load the run's EMA generator and check every input the metrics need (weights, models).
    What to measure is the run's `evaluate.*` settings with the arguments that are not None
    folded in."""
    run_dir = Path(run_dir)
    if metrics is not None:
        parse_metrics(metrics)  # an unknown name fails before the snapshot loads
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found; give a trained run directory")
    torch_device = resolve_device(device, "--device")
    loaded = load_generator(run_dir, torch_device, snapshot)
    config = with_choices(_with_overrides(loaded.config, overrides), metrics, num_samples,
                          {"inception_weights": inception_weights, "arcface_onnx": arcface_onnx,
                           "face_detector_onnx": face_detector_onnx})
    chosen = parse_metrics(config.evaluate.metrics)
    extractor, embedder = choose_models(config, chosen, torch_device)
    return Plan(run_dir, loaded, config, chosen, sample_counts(config), seed, extractor,
                embedder)


def choose_models(
    config: ExperimentConfig,
    chosen: Sequence[str],
    device: torch.device,
) -> tuple[tuple[str, Path | None] | None, Embedder | None]:
    """The FID feature extractor and the identity embedder that the `chosen` metrics need for
    `config` (None where none is needed), from its `evaluate.*` weight files; a UserError for
    a missing or wrong weight file."""
    needs = {registry.get(name).needs for name in chosen}
    settings = config.evaluate
    # (the embedder first: its errors come before the extractor's unused-weights warning)
    embedder = (choose_embedder(config, settings.arcface_onnx, device,
                                settings.face_detector_onnx)
                if "embedder" in needs else None)
    extractor = (choose_extractor(config, settings.inception_weights)
                 if "extractor" in needs else None)
    return extractor, embedder


def run_plan(plan: Plan, track: bool | None = None) -> dict[str, Any]:
    """Run the planned metrics; write metrics.json and the eval/ files; log to W&B."""
    g = plan.loaded.generator
    apply_reproducibility(plan.config.train.threads, plan.config.train.deterministic)
    results: dict[str, MetricResult] = {}
    device = next(g.parameters()).device
    if device.type == "cpu":
        keep_freed_memory()
    for name in plan.metrics:
        metric = registry.get(name)
        if metric.shares in results:
            results[name] = results[metric.shares]  # one computation serves both (KID, FID)
            continue
        log.info("evaluating %s on %d samples", name, plan.counts[name])
        context = MetricContext(g, plan.config, plan.counts[name], plan.seed, plan.extractor,
                                plan.embedder)
        with Stopwatch(device) as watch:
            result = registry.function(metric.run)(context)
        result.seconds = watch.seconds
        results[name] = result
    values = _collect(plan, results)
    values = _write(plan, values, results.get("disentangle"))
    _track(plan, values, results.get("disentangle"), track)
    return values


def _collect(plan: Plan, results: dict[str, MetricResult]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "checkpoint": str(_relative(plan.loaded.path, plan.run_dir)),
        "iteration": plan.loaded.iteration, "seed": plan.seed,
        "model": plan.config.model.name, "preset": plan.config.preset,
        "threads": plan.config.train.threads, "deterministic": plan.config.train.deterministic,
        "machine": machine(next(plan.loaded.generator.parameters()).device),
    }
    if trained := trained_on(plan.run_dir):
        values["machine/train"] = "; ".join(trained)
    for metric, result in results.items():
        values |= result.values
        values[f"num_samples/{metric}"] = result.num_samples
        values[f"seconds/{metric}"] = round(result.seconds, 3)
        values[f"images_per_second/{metric}"] = round(result.images / max(result.seconds, 1e-9),
                                                      2)
    # A shared computation (FID and KID) writes both metrics' keys: keep what was asked for.
    return {key: value for key, value in values.items()
            if registry.metric_of(key) in (*results, None)}


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return path


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> None (JSON has no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write(plan: Plan, values: dict[str, Any], disentangle: MetricResult | None
           ) -> dict[str, Any]:
    path = plan.run_dir / METRICS_FILE
    previous: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = {}
    same = all(previous.get(key) == values[key] for key in ("checkpoint", "seed"))
    merged = {key: _json_safe(value) for key, value in
              ({**previous, **values} if same else values).items()}
    atomic_write_json(path, merged)
    if disentangle is not None:
        import pandas as pd

        eval_dir = plan.run_dir / EVAL_DIR
        frame = pd.DataFrame(disentangle.artifacts["rows"], columns=list(DISENTANGLE_COLUMNS))
        atomic_write_text(eval_dir / "disentangle.csv", frame.to_csv(index=False))
        maps = {key: value.numpy() for key, value in disentangle.artifacts["maps"].items()}
        if maps:
            axes = json.dumps(MAP_SAMPLE_AXIS)
            atomic_write(eval_dir / "difference_maps.npz", lambda file: np.savez_compressed(
                file, parts=np.array(PARTS), views=np.array(VIEWS), sample_axis=np.array(axes),
                **maps))
    return merged


def _track(plan: Plan, values: dict[str, Any], disentangle: MetricResult | None,
           track: bool | None) -> None:
    from harness.tracking import Tracker

    tracker = Tracker(plan.config, plan.run_dir, job_type="eval", enabled=track)
    if not tracker.enabled:
        return
    import wandb

    tracker.summary(values)  # the same flat keys as metrics.json
    rows = [[metric, float(value)] for metric, value in sorted(values.items())
            if isinstance(value, (int, float)) and not isinstance(value, bool)]
    tables: dict[str, Any] = {"eval/metrics": wandb.Table(columns=["metric", "value"], data=rows)}
    if disentangle is not None:
        tables["eval/disentanglement"] = wandb.Table(
            columns=["part", "view", "d_mean", "d_mean_masked"],
            data=[[part, view, values.get(f"d_mean/{part}@{view}"),
                   values.get(f"d_mean_masked/{part}@{view}")]
                  for part in PARTS for view in VIEWS])
        tables["eval/disentanglement_samples"] = disentangle_table(disentangle.artifacts["rows"])
        grid = difference_grid(disentangle.artifacts["maps"])
        if grid is not None:
            tables["eval/difference_maps"] = wandb.Image(
                grid, caption="per part: original | edited | difference (x4), frontal view")
    tracker.log(tables, iteration=plan.loaded.iteration)
    tracker.finish()


def disentangle_table(rows: list[dict[str, Any]]) -> Any:
    """A `wandb.Table` of per-sample disentanglement rows (DISENTANGLE_COLUMNS; an undefined
    masked D_mean, a part absent from both images, is empty). W&B shows at most
    `wandb.Table.MAX_ROWS` rows (10,000: the paper's 1,000 samples x 5 parts x 2 views);
    eval/disentangle.csv always holds them all."""
    import wandb

    if len(rows) > wandb.Table.MAX_ROWS:
        log.warning("W&B shows the first %d of %d per-sample disentanglement rows; all of them "
                    "are in %s/disentangle.csv", wandb.Table.MAX_ROWS, len(rows), EVAL_DIR)
    return wandb.Table(columns=list(DISENTANGLE_COLUMNS),
                       data=[[_json_safe(row[column]) for column in DISENTANGLE_COLUMNS]
                             for row in rows])


def difference_grid(maps: dict[str, torch.Tensor]) -> np.ndarray | None:
    """A picture of the first kept sample at the frontal view: one row per part with the
    original, the edited image and the difference map (scaled x4, grey)."""
    from harness.visualize import image_grid

    if "original" not in maps:
        return None
    original = maps["original"][0, 0].permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    tiles = []
    for p in range(len(PARTS)):
        edited = maps["edited"][0, p, 0].permute(1, 2, 0).numpy()
        difference = (maps["difference"][0, p, 0] * 4 * 255).clamp(0, 255).to(torch.uint8)
        tiles += [original, edited, difference[..., None].expand(-1, -1, 3).numpy()]
    return image_grid(tiles, columns=3)


def evaluate_run(
    run_dir: str | Path,
    metrics: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    inception_weights: str | Path | None = None,
    arcface_onnx: str | Path | None = None,
    face_detector_onnx: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    track: bool | None = None,
    overrides: Sequence[str] | None = None,
    snapshot: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run's newest (or given) snapshot; returns what it wrote to metrics.json.

    Every argument left None takes the run's `evaluate.*` setting:
    metrics: names or a comma list of registered metrics (evaluate.metrics; None there: the
        default set);
    num_samples: samples for every metric (evaluate.fid_samples, id_samples, ...);
    inception_weights / arcface_onnx: local weight files (nothing is ever downloaded);
    face_detector_onnx: an insightface SCRFD detector (.onnx) to align ArcFace's faces by their
        five landmarks (None: a fixed centre crop, `evaluate.id_crop`);
    track: log to W&B as an "eval" job (None = the run's tracking.wandb);
    overrides: `--set` strings for evaluate.* (and data.path / data.cache_dir).
    """
    plan = plan_evaluation(run_dir, metrics, num_samples, inception_weights, arcface_onnx,
                           face_detector_onnx, seed, device, overrides, snapshot)
    log.info("%s", plan.describe())
    return run_plan(plan, track)


def format_results(values: dict[str, Any], metrics: Sequence[str] = METRICS) -> str:
    """Human-readable lines for the CLI about `metrics`; every FID/KID carries its extractor's
    name."""
    lines = [f"checkpoint {values['checkpoint']} (iteration {values['iteration']}, "
             f"seed {values['seed']})"]
    values = {key: value for key, value in values.items()
              if registry.metric_of(key) in (*metrics, None)}
    for metric in registry.names():
        lines += registry.function(registry.get(metric).lines)(values)
    for metric in registry.names():
        if f"seconds/{metric}" in values:
            lines.append(f"  {metric}: {values[f'num_samples/{metric}']} samples, "
                         f"{values[f'seconds/{metric}']:.1f} s, "
                         f"{values[f'images_per_second/{metric}']:.1f} images/s")
    return "\n".join(lines)
