"""The evaluation metrics, one registration each: what every consumer (the suite, sweep files,
W&B summaries, report tables) knows about a metric.

A registration names the metric, says in one line what it measures, which `evaluate.*`
setting holds its sample count, the keys it writes to metrics.json (exact keys and key
prefixes), which of them have a goal (lower or higher is better: W&B summaries keep the best
value, reports say which arm is better) and how reports show the ones compared between arms.
The function that runs it and the one that prints its lines are named as "module:function"
and imported only when used, so this module (and sweep-file validation) needs no torch.

Adding a metric: its module (a `run(context) -> MetricResult` and a `lines(values)` function)
plus one `register(Metric(...))` below; docs/evaluation.md shows the depth metric as the
example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Goal = Literal["min", "max"]


@dataclass(frozen=True)
class Column:
    """How reports show a metrics.json key they compare between arms."""

    label: str  # column header, e.g. "FID" (reports add the goal's arrow)
    fmt: str  # format spec of one value, e.g. ".2f"
    scale: float = 1  # shown value = stored value * scale (KID is shown x100)


@dataclass(frozen=True)
class Metric:
    """One metric of the evaluation suite."""

    name: str  # the name in --metrics, sweep files' metrics:, and metrics.json's counts
    summary: str  # one line: what it measures
    samples: str  # the `evaluate.*` field holding its number of samples
    run: str  # "module:function": (MetricContext) -> MetricResult
    lines: str  # "module:function": (metrics.json values) -> its lines of the CLI summary
    keys: tuple[str, ...] = ()  # exact metrics.json keys it writes
    prefixes: tuple[str, ...] = ()  # prefixes of the other metrics.json keys it writes
    goals: Mapping[str, Goal] = field(default_factory=dict)  # keys that are better low/high
    columns: Mapping[str, Column] = field(default_factory=dict)  # keys reports compare
    shares: str | None = None  # computed by that metric's run when both are asked for
    # a model its run needs from weight files, loaded before any sample is generated
    needs: Literal["extractor", "embedder"] | None = None
    default: bool = True  # part of the default set (--metrics omitted, metrics: null)

    def __post_init__(self) -> None:
        unknown = (set(self.goals) | set(self.columns)) - set(self.keys)
        if unknown:
            raise ValueError(f"metric {self.name}: goals/columns of keys it does not write: "
                             f"{sorted(unknown)}")
        if set(self.columns) - set(self.goals):
            raise ValueError(f"metric {self.name}: a compared key needs a goal")
        object.__setattr__(self, "goals", MappingProxyType(dict(self.goals)))
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    def owns(self, key: str) -> bool:
        """Whether this metric writes metrics.json key `key`."""
        return key in self.keys or key.startswith(self.prefixes)


_METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric (running order is registration order)."""
    if metric.name in _METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    if metric.shares is not None and metric.shares not in _METRICS:
        raise ValueError(f"metric {metric.name}: shares {metric.shares!r}, not registered yet")
    _METRICS[metric.name] = metric
    return metric


def names(default_only: bool = False) -> tuple[str, ...]:
    """Every metric's name in running order (or only those of the default set)."""
    return tuple(name for name, metric in _METRICS.items() if metric.default or not default_only)


def in_running_order(chosen: list[str] | tuple[str, ...]) -> list[str]:
    """`chosen` names in running order, each once; a ValueError for none or an unknown one."""
    if not chosen:
        raise ValueError("no metric named; name metrics, or leave them out for the default set")
    unknown = [name for name in chosen if name not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(_METRICS)}")
    return [name for name in _METRICS if name in chosen]


def get(name: str) -> Metric:
    """The registration of metric `name` (a KeyError for an unknown one)."""
    return _METRICS[name]


def metric_of(key: str) -> str | None:
    """The metric that writes metrics.json key `key` (None: a shared key, e.g. `seed`);
    bookkeeping keys (`seconds/<metric>`, ...) belong to the metric they name."""
    head, _, tail = key.partition("/")
    if head in ("num_samples", "seconds", "images_per_second") and tail in _METRICS:
        return tail
    return next((name for name, metric in _METRICS.items() if metric.owns(key)), None)


def goals() -> dict[str, Goal]:
    """Every key with a goal: key -> "min" | "max"."""
    return {key: goal for metric in _METRICS.values() for key, goal in metric.goals.items()}


def columns() -> dict[str, tuple[Column, Goal]]:
    """Every key reports compare, in running order: key -> (column, goal)."""
    return {key: (column, metric.goals[key]) for metric in _METRICS.values()
            for key, column in metric.columns.items()}


def function(dotted: str) -> Callable[..., Any]:
    """The function named "module:function"."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


register(Metric(
    name="fid", summary="Fréchet distance between generated and real image features",
    samples="fid_samples", run="harness.metrics.fid:run", lines="harness.metrics.fid:lines",
    keys=("fid",), goals={"fid": "min"}, columns={"fid": Column("FID", ".2f")},
    needs="extractor"))
register(Metric(
    name="kid", summary="kernel inception distance (unbiased), on FID's images",
    samples="fid_samples", run="harness.metrics.fid:run", lines="harness.metrics.fid:kid_lines",
    keys=("kid", "kid_std"), goals={"kid": "min"},
    columns={"kid": Column("KID×100", ".3f", 100)}, shares="fid", needs="extractor"))
register(Metric(
    name="id", summary="identity consistency: cosine of face embeddings across two views",
    samples="id_samples", run="harness.metrics.identity:run",
    lines="harness.metrics.identity:lines", keys=("id_consistency",), prefixes=("id_",),
    goals={"id_consistency": "max"}, columns={"id_consistency": Column("ID", ".3f")},
    needs="embedder"))
register(Metric(
    name="disentangle", summary="D_mean and masked D_mean of part edits (3D-SSGAN Table 1)",
    samples="disentangle_samples", run="harness.metrics.disentangle:run",
    lines="harness.metrics.disentangle:lines", prefixes=("d_mean",)))
register(Metric(
    name="views", summary="view consistency: reprojection L1 and mask mIoU between two views",
    samples="view_samples", run="harness.metrics.views:run", lines="harness.metrics.views:lines",
    keys=("view/photometric_l1", "view/mask_miou"), prefixes=("view/",),
    goals={"view/photometric_l1": "min", "view/mask_miou": "max"},
    columns={"view/photometric_l1": Column("view L1", ".4f"),
             "view/mask_miou": Column("mask mIoU", ".3f")}))
register(Metric(
    name="classes", summary="TV distance of generated masks' class frequencies to the data's",
    samples="class_samples", run="harness.metrics.classes:run",
    lines="harness.metrics.classes:lines", keys=("mask/class_tv",), prefixes=("mask/",),
    goals={"mask/class_tv": "min"}, columns={"mask/class_tv": Column("class TV", ".4f")}))
register(Metric(
    name="depth", summary="mean depth per class of generated samples against the data's",
    samples="class_samples", run="harness.metrics.depth:run", lines="harness.metrics.depth:lines",
    keys=("depth/class_mae", "depth/offset_mae"), prefixes=("depth/",),
    goals={"depth/class_mae": "min", "depth/offset_mae": "min"},
    columns={"depth/class_mae": Column("depth MAE", ".4f"),
             "depth/offset_mae": Column("depth vs face MAE", ".4f")}, default=False))
