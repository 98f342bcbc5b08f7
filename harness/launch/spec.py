"""Sweep files (`sweeps/*.yaml`): their schema, and their expansion into validated trials.

A sweep names a model, a preset, a dataset and seeds, and either a `grid` (named variants
with paired values, and/or a cartesian product over dotted config keys) or a `search`
(Optuna). Every trial's config is resolved and validated in full at expansion, so a bad key
anywhere in the file is reported before anything runs. A trial's id is stable: derived from
its resolved config (which includes the seed): `<variant>-s<seed>-<8 hex of the hash>`.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from harness.config import (
    DEFAULT_MODEL,
    PRESET_NAMES,
    ExperimentConfig,
    TrainConfig,
    config_to_dict,
    flatten,
    parse_override,
    read_yaml,
    resolve_config,
    unflatten,
    validation_error,
)
from harness.errors import UserError
from harness.metrics import registry as metric_registry
from models.config import Schema

# Metric groups `harness.evaluate.evaluate_run(metrics=...)` computes (contract 1).
METRIC_GROUPS = metric_registry.names()
# Settings that do not change what a trial computes, so not part of its id. Weight files are
# recorded in config.yaml but not hashed: the same file given at another path (another
# machine, `--inception-weights` on a later run) must resume the same trials; FID statistics
# are cached by the file's digest.
WEIGHT_FILES = ("inception_weights", "arcface_onnx", "face_detector_onnx")
# Where a trial keeps its files and what it logs to: never what it computes.
BOOKKEEPING_KEYS = ("data.cache_dir", "data.workers", "train.keep_snapshots", "tracking.",
                    *(f"evaluate.{name}" for name in WEIGHT_FILES))
# How and where a trial runs (compiled, memory layout; harness.training.speed): not what it
# computes beyond the order of float sums, and may change when a run resumes, so not hashed;
# a sweep that varies them still compares its arms ("train.compile" covers compile_mode).
HOW_IT_RUNS = ("train.device", "train.compile", "train.channels_last")
ID_IGNORED = (*BOOKKEEPING_KEYS, *HOW_IT_RUNS)
# Keys added after trial ids were first minted, hashed only when set away from the value every
# earlier trial ran with (TrainConfig.ADDED_KEYS), so that those trials keep their ids.
ID_OMITTED_AT = {"train.precision": TrainConfig.ADDED_KEYS["precision"]}
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DATA_CHOICES = "synthetic or celebamask-hq=PATH"


def _slug(value: str, what: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"{what} {value!r} must be letters, digits and . _ + - (a folder name)")
    return value


class Variant(Schema):
    """One named point of a grid: values that go together (paired), optionally a model."""

    name: str  # label of the variant: part of trial ids and report rows
    model: str | None = None  # model.name of this variant (default: the sweep's model)
    set: dict[str, Any] = {}  # dotted config key -> value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _slug(value, "variant name")


class Grid(Schema):
    """Named variants times the cartesian product of the other keys (dotted key -> values)."""

    variants: list[Variant] = []
    axes: dict[str, list[Any]] = {}  # written in the file as `dotted.key: [values]`

    @model_validator(mode="before")
    @classmethod
    def _axes_inline(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = {k: v for k, v in data.items() if k not in ("variants", "axes")}
            for key in inline:
                if "." not in str(key):
                    close = difflib.get_close_matches(str(key), ["variants", "axes"], n=1)
                    hint = f"did you mean {close[0]!r}?" if close else (
                        "grid keys are variants: or dotted config keys like train.lr")
                    raise ValueError(f"unknown key {key!r}; {hint}")
            data = {k: v for k, v in data.items() if k in ("variants", "axes")}
            data["axes"] = {**data.get("axes", {}), **inline}
        return data

    @model_validator(mode="after")
    def _non_empty(self) -> Grid:
        if not self.variants and not self.axes:
            raise ValueError("no variants and no config keys to vary; add variants: or dotted "
                             "keys with values (train.lr: [0.001, 0.002]), or remove grid: for "
                             "one trial per seed")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for key, values in self.axes.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return self


class Param(Schema):
    """One dimension of a search space."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None  # float/int: lower bound (inclusive)
    high: float | None = None  # float/int: upper bound (inclusive)
    log: bool = False  # float/int: sample on a log scale
    step: float | None = None  # float/int: discretisation step
    choices: list[Any] | None = None  # categorical: the values

    @model_validator(mode="after")
    def _bounds(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        return self

    def example(self) -> Any:
        """A value inside the space (validates the key when resolving a config)."""
        if self.type == "categorical":
            return self.choices[0]  # type: ignore[index]
        return int(self.low) if self.type == "int" else float(self.low)  # type: ignore[arg-type]


class Objective(Schema):
    """What the search optimises: a key of metrics.json and a direction."""

    metric: str = "fid"  # key of RUN_DIR/metrics.json, e.g. fid, id_consistency
    direction: Literal["minimize", "maximize"] = "minimize"


class Pruning(Schema):
    """Stop unpromising trials early from intermediate evaluations of the objective."""

    def every(self, iterations: int) -> int:
        """Training iterations between intermediate evaluations of an `iterations` run."""
        return max(1, iterations // (self.evaluations + 1))

    evaluations: int = Field(2, ge=1)  # intermediate evaluations, evenly spaced in training
    pruner: Literal["median", "percentile"] = "median"
    percentile: float = Field(25.0, gt=0, lt=100)  # percentile pruner: keep the best P%
    startup_trials: int = Field(2, ge=0)  # never prune before this many trials finished


class Search(Schema):
    """An Optuna search: sampler, budget, objective and space."""

    sampler: Literal["tpe", "random", "grid"] = "tpe"
    trials: int | None = Field(None, ge=1)  # budget; default for grid: every grid point
    objective: Objective = Objective()
    space: dict[str, Param]
    storage: str | None = None  # RDB URL or journal file; default SWEEP_DIR/optuna.journal
    sampler_seed: int = 0  # seeds the sampler
    pruning: Pruning | None = None

    @model_validator(mode="after")
    def _budget(self) -> Search:
        if not self.space:
            raise ValueError("search.space needs at least one parameter")
        if self.sampler == "grid":
            bad = [key for key, param in self.space.items() if param.type != "categorical"]
            if bad:
                raise ValueError(f"the grid sampler needs choices for every parameter ({bad[0]})")
        elif self.trials is None:
            raise ValueError(f"search.trials is required with the {self.sampler} sampler")
        return self

    def grid_size(self) -> int:
        """Number of points of a grid-sampler space."""
        size = 1
        for param in self.space.values():
            size *= len(param.choices or [])
        return size

    def budget(self) -> int:
        """Number of trials the search runs."""
        return self.trials or self.grid_size()


class SlurmSettings(Schema):
    """Which profile of slurm/profiles/ the sweep's jobs use, and changes to it."""

    profile: str = "gpu"  # name in slurm/profiles/ or a path to a YAML profile
    overrides: dict[str, Any] = {}  # AutoExecutor parameters on top of the profile


class ReportSettings(Schema):
    """Tables and figures `harness.report` builds for this sweep (contract 3)."""

    tables: list[str] = []  # names of harness.report.tables.TABLES
    figures: list[str] = []  # names of harness.report.figures.FIGURES

    @field_validator("tables", "figures")
    @classmethod
    def _known(cls, names: list[str], info: ValidationInfo) -> list[str]:
        from harness.report.figures import FIGURES
        from harness.report.tables import TABLES

        known = list(TABLES) if info.field_name == "tables" else list(FIGURES)
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a report {info.field_name[:-1]}; choose "
                             f"from {', '.join(known)}")
        return names


class SweepSpec(Schema):
    """A sweep file."""

    name: str  # the sweep's directory under --runs-dir and its W&B group
    description: str = ""
    model: str = DEFAULT_MODEL  # model.name of every trial (a variant may change it)
    preset: Literal["smoke", "cpu", "paper"] = "cpu"  # --preset wins
    data: str = "synthetic"  # synthetic or celebamask-hq=PATH; --data wins
    seeds: list[int] = Field([0], min_length=1)  # train.seed of each trial
    overrides: dict[str, Any] = {}  # dotted config key -> value, for every trial
    grid: Grid | None = None
    # the variant every other arm is compared with in the report (default: the first one)
    reference: str | None = None
    search: Search | None = None
    # what every trial measures (evaluate.metrics of its config); None: the default set
    metrics: list[Literal[METRIC_GROUPS]] | None = Field(None, min_length=1)  # type: ignore[valid-type]
    # weight files (evaluate.* of every trial's config; the command line's flags win)
    inception_weights: str | None = None  # FID on real data: torch-fidelity's Inception file
    arcface_onnx: str | None = None  # identity metric on real data: an ArcFace .onnx file
    face_detector_onnx: str | None = None  # identity metric: SCRFD .onnx for aligned crops
    wandb: bool = True  # one W&B run per trial (offline without credentials)
    slurm: SlurmSettings = SlurmSettings()
    report: ReportSettings = ReportSettings()

    @model_validator(mode="before")
    @classmethod
    def _no_eval_samples(cls, data: Any) -> Any:
        if isinstance(data, dict) and "eval_samples" in data:
            raise ValueError("eval_samples is gone: set each metric's count in overrides:, "
                             "e.g. evaluate.fid_samples: 2000 (docs/changelog.md)")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _slug(value, "sweep name")

    @field_validator("data")
    @classmethod
    def _data(cls, value: str) -> str:
        data_overrides(value)
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> SweepSpec:
        if self.grid is not None and self.search is not None:
            raise ValueError("a sweep has either grid: or search:, not both")
        if self.search is not None and len(self.seeds) != 1:
            raise ValueError("a search runs one seed per point: give seeds: [one seed]")
        if self.search is not None:
            group = metric_group(self.search.objective.metric)
            if self.metrics is not None and group not in self.metrics:
                raise ValueError(f"search.objective.metric {self.search.objective.metric!r} "
                                 f"needs {group!r} in metrics")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        names = [variant.name for variant in self.grid.variants] if self.grid else []
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not a variant of grid: "
                             f"choose one of {', '.join(names) or '(no variants)'}")
        return self

    def reference_variant(self) -> str | None:
        """The variant the report compares the others with: `reference`, else the first."""
        if self.reference is not None:
            return self.reference
        return self.grid.variants[0].name if self.grid and self.grid.variants else None


def metric_group(key: str) -> str:
    """The evaluation group that produces a key of metrics.json (fid -> fid, id_consistency
    -> id, d_mean/... -> disentangle, view/... -> views, mask/... -> classes)."""
    group = metric_registry.metric_of(key)
    if group is not None:
        return group
    raise ValueError(f"objective metric {key!r} is not a key of metrics.json (e.g. fid, kid, "
                     "id_consistency, view/mask_miou, d_mean/mouth@frontal, mask/class_tv)")


def data_overrides(data: str) -> dict[str, Any]:
    """`synthetic` or `celebamask-hq=PATH` as dotted config overrides."""
    source, sep, path = data.partition("=")
    if source == "synthetic" and not sep:
        return {"data.source": "synthetic"}
    if source == "celebamask-hq" and path:
        return {"data.source": "celebamask-hq", "data.path": path}
    raise ValueError(f"data {data!r} is not {_DATA_CHOICES}")


@dataclass(frozen=True)
class Trial:
    """One trial: a resolved, validated config with a stable id."""

    trial_id: str
    variant: str  # human label, e.g. "gaussian-a1"
    seed: int
    overrides: dict[str, Any]  # the dotted keys this trial sets on top of its preset
    config: ExperimentConfig = field(compare=False)

    def record(self, sweep: str) -> dict[str, Any]:
        """The content of RUN_DIR/trial.json (contract 2)."""
        return {"trial_id": self.trial_id, "sweep": sweep, "variant": self.variant,
                "seed": self.seed, "overrides": self.overrides,
                "model": self.config.model.name, "preset": self.config.preset}


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file with the command line's changes applied."""

    spec: SweepSpec  # as run: preset and data replaced by --preset and --data
    path: str  # the sweep file, for messages
    sets: tuple[str, ...] = ()  # --set KEY=VALUE for every trial

    @property
    def name(self) -> str:
        """The sweep's name."""
        return self.spec.name

    def record(self) -> dict[str, Any]:
        """The sweep as run, for SWEEP_DIR/sweep.yaml: --preset, --data and --set folded in."""
        record = self.spec.model_dump(mode="json")
        record["overrides"].update(self.set_overrides())
        return record

    def evaluation_overrides(self) -> dict[str, Any]:
        """The file's `metrics:` and weight files as evaluate.* keys (those it sets)."""
        spec = self.spec
        values = {"metrics": spec.metrics, **{name: getattr(spec, name) for name in WEIGHT_FILES}}
        return {f"evaluate.{name}": copy.deepcopy(value) for name, value in values.items()
                if value is not None}

    def base_overrides(self) -> dict[str, Any]:
        """Dotted keys every trial shares: model, data, tracking, evaluation, then the file's
        overrides."""
        return {"model.name": self.spec.model, **data_overrides(self.spec.data),
                "tracking.wandb": self.spec.wandb, "tracking.group": self.spec.name,
                **self.evaluation_overrides(), **copy.deepcopy(self.spec.overrides)}

    def trial(self, label: str, values: dict[str, Any], seed: int, origin: str) -> Trial:
        """The trial of `values` (dotted keys) at `seed`, validated; `origin` names the place
        in the sweep file for error messages."""
        overrides = {**self.base_overrides(), **copy.deepcopy(values)}
        where = f"{self.path} ({origin})"
        for key in overrides:
            if not key or any(not part for part in key.split(".")):
                raise UserError(f"{where}: {key!r} is not a dotted config key like train.lr")
        config = resolve_config(unflatten({**overrides, "train.seed": seed}), where,
                                self.spec.preset, list(self.sets))
        overrides.update(self.set_overrides())
        return Trial(f"{label}-s{seed}-{config_hash(config)}", label, seed, overrides, config)

    def set_overrides(self) -> dict[str, Any]:
        """The command line's --set KEY=VALUE as dotted keys."""
        return {".".join(path): value for path, value in map(parse_override, self.sets)}


def config_hash(config: ExperimentConfig) -> str:
    """8 hex digits identifying what a config computes (not where it logs or caches)."""
    flat = {key: value for key, value in flatten(config_to_dict(config)).items()
            if not any(key == skip or key.startswith(skip) for skip in ID_IGNORED)
            and not (key in ID_OMITTED_AT and value == ID_OMITTED_AT[key])}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:8]


def _known_fields(loc: tuple[str, ...]) -> list[str]:
    """Field names of the schema at `loc` inside a sweep file (for did-you-mean hints)."""
    schema: Any = SweepSpec
    for part in loc:
        if part.isdigit():
            continue
        info = getattr(schema, "model_fields", {}).get(part)
        annotation = getattr(info, "annotation", None)
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, Schema):
                schema = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, Schema):
                    schema = inner
    return sorted(getattr(schema, "model_fields", {}))


def load_sweep(
    path: str | Path,
    preset: str | None = None,
    data: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> Sweep:
    """Read and validate a sweep file; `preset` and `data` (command line) win over the file's.

    Every trial's config is resolved here (grids) or for a sample of the space (searches), so
    a bad key is a UserError naming the sweep file and the key before anything runs.
    """
    path = str(path)
    raw = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise validation_error(error, path, _known_fields) from None
    changes: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESET_NAMES:
            raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESET_NAMES)}")
        changes["preset"] = preset
    if data is not None:
        try:
            data_overrides(data)
        except ValueError as error:
            raise UserError(f"--data: {error}") from None
        changes["data"] = data
    sweep = Sweep(spec.model_copy(update=changes), path, tuple(sets))
    sweep.trial("overrides", {}, spec.seeds[0], "overrides")
    if spec.search is not None:
        example = {key: param.example() for key, param in spec.search.space.items()}
        sweep.trial("search", example, spec.seeds[0], "search.space")
    else:
        expand(sweep)
    return sweep


def expand(sweep: Sweep) -> list[Trial]:
    """The trials of a grid sweep: variants x axes x seeds (one trial per seed without grid)."""
    spec = sweep.spec
    if spec.search is not None:
        return []
    grid_variants, axes = (spec.grid.variants, spec.grid.axes) if spec.grid else ([], {})
    variants: list[tuple[str, dict[str, Any], str]] = [
        (variant.name,
         {**({"model.name": variant.model} if variant.model else {}), **variant.set},
         f"variant {variant.name}")
        for variant in grid_variants
    ] or [("", {}, "grid" if axes else "overrides")]
    keys = list(axes)
    trials: list[Trial] = []
    for (name, values, origin), point, seed in itertools.product(
        variants, itertools.product(*(axes[key] for key in keys)), spec.seeds
    ):
        axis_values = dict(zip(keys, point, strict=True))
        parts = [name] if name else []
        parts += [_axis_label(key, value) for key, value in axis_values.items()]
        where = origin if not keys or not name else f"{origin}, grid {', '.join(keys)}"
        trials.append(sweep.trial("_".join(parts) or "default", {**values, **axis_values},
                                  seed, where))
    seen: dict[str, Trial] = {}
    for trial in trials:
        if trial.trial_id in seen:
            raise UserError(
                f"{sweep.path}: {seen[trial.trial_id].variant} and {trial.variant} resolve to the "
                "same config; make the variants differ or remove one"
            )
        seen[trial.trial_id] = trial
    return trials


def _axis_label(key: str, value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    label = f"{key.split('.')[-1]}-{text}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", label)
