"""Typed experiment configs: schemas, presets, YAML loading and `--set` overrides.

A config is resolved from layers, later layers winning:
    schema defaults (the paper's settings) < harness preset < the model's preset
    < the YAML file < `--set key.path=value` overrides.
Every layer is validated by the same pydantic schemas; a mistake becomes a `UserError` that
names the layer it came from (file, `--set`, preset), the key path, the bad value and what
was expected.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from harness.errors import UserError
from harness.metrics import registry as metric_registry
from models.config import ModelConfig, Schema
from models.registry import get_model, model_names

PRESET_NAMES = ("smoke", "cpu", "paper")
DEFAULT_PRESET = "cpu"
DEFAULT_MODEL = "3dssgan"


class DataConfig(Schema):
    """Which dataset to train and evaluate on; the resolution is the model's."""

    source: Literal["synthetic", "celebamask-hq"] = "synthetic"
    path: str | None = None  # celebamask-hq: the raw download or a prepared directory
    identities: int = Field(2500, ge=2)  # synthetic: number of generated identities
    views: int = Field(4, ge=1)  # synthetic: rendered views per identity
    seed: int = 0  # synthetic: scene seed (the data, not the training run)
    flip: bool = True  # add mirrored copies with mirrored cameras (StyleGAN x-flip)
    workers: int = Field(0, ge=0)  # DataLoader worker processes
    cache_dir: str | None = None  # prepared-data cache; default $HARNESS_CACHE_DIR or ~/.cache

    @model_validator(mode="after")
    def _path_for_real_data(self) -> DataConfig:
        if self.source == "celebamask-hq" and not self.path:
            raise ValueError(
                "data.source=celebamask-hq needs data.path (the CelebAMask-HQ folder), e.g. "
                "--data celebamask-hq=/datasets/CelebAMask-HQ"
            )
        return self


class TrainConfig(Schema):
    """The shared GAN loop's settings (SemanticStyleGAN's defaults unless noted)."""

    # Keys added since runs were saved, with the value those runs were trained with
    # (models.config.ModelConfig.ADDED_KEYS; `with_added_keys`).
    ADDED_KEYS: ClassVar[dict[str, Any]] = {"style_mixing": 0.0, "path_length_weight": 0.0,
                                            "keep_snapshots": 0, "precision": "float32",
                                            "compile": [], "compile_mode": "default",
                                            "channels_last": False}

    iterations: int = Field(150_000, ge=1)  # generator steps in total
    batch_size: int = Field(4, ge=1)  # images per step over all ranks (paper: 4)
    lr: float = Field(0.002, gt=0)  # Adam learning rate before lazy-regularisation scaling
    beta1: float = Field(0.0, ge=0, lt=1)  # Adam beta1
    beta2: float = Field(0.99, ge=0, lt=1)  # Adam beta2
    r1_gamma_image: float = Field(10.0, ge=0)  # R1 weight on the image branch of D
    r1_gamma_mask: float = Field(1000.0, ge=0)  # R1 weight on the mask branch of D
    d_reg_every: int = Field(16, ge=1)  # lazy R1: every N discriminator steps
    mask_consistency_weight: float = Field(100.0, ge=0)  # coarse vs final mask loss weight
    style_mixing: float = Field(0.3, ge=0, le=1)  # probability of mixing two w per batch (SSGAN)
    path_length_weight: float = Field(0.5, ge=0)  # StyleGAN2 path-length penalty on G; 0: off
    path_length_every: int = Field(4, ge=1)  # lazy path-length step every N generator steps
    path_length_batch_shrink: int = Field(2, ge=1)  # its batch is batch_size / this
    ema_kimg: float = Field(10.0, gt=0)  # half-life of the generator EMA, thousands of images
    checkpoint_every: int = Field(5000, ge=1)  # iterations between full checkpoints
    # network snapshots kept, counted from the newest (files; one with an empty file
    # network-snapshot-*.pt.keep beside it is never pruned); 0 = keep all
    keep_snapshots: int = Field(10, ge=0)
    log_every: int = Field(100, ge=1)  # iterations between metrics.jsonl lines
    sample_every: int = Field(5000, ge=1)  # iterations between sample grids
    seed: int = 0  # training seed (latents, cameras, init, data order)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    # CPU threads of training and evaluation; 0 = every core this process may use, written
    # into the resolved config as that number. The thread count changes the order of float
    # sums, so the same config and seed give the same numbers only at the same count.
    threads: int = Field(0, ge=0)
    # torch.use_deterministic_algorithms and no cuDNN autotuning (CPU runs are deterministic
    # at a fixed thread count without it; on CUDA it is needed and slower)
    deterministic: bool = False
    max_grad_norm: float | None = None  # clip gradients to this norm; None = no clipping
    # generated images' poses: the paper's Gaussian yaw/pitch prior, or the data's own poses
    fake_cameras: Literal["prior", "dataset"] = "prior"
    # GPU speed switches (harness.training.speed, docs/training.md#gpu-speed-switches); every
    # default is the exact float32 eager step until a GPU measurement chooses otherwise.
    # bf16: G's and D's forward passes under bfloat16 autocast; the losses, R1, the path-length
    # step and the volume rendering (rays, NeRF weights, compositing) stay float32
    precision: Literal["float32", "bf16"] = "float32"
    # networks run through torch.compile (the regularisation passes, which differentiate twice,
    # run them eagerly); their checkpoints are the same as without
    compile: list[Literal["render_net", "discriminator"]] = []
    # torch.compile's mode: "reduce-overhead" replays CUDA graphs (many small kernels: the cpu
    # preset on a GPU), "max-autotune" also searches kernel configurations (long compiles)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    channels_last: bool = False  # the render net's and D's 2D convolutions in NHWC memory

    @field_validator("compile")
    @classmethod
    def _compile_set(cls, names: list[str]) -> list[str]:
        return sorted(set(names))  # a set of networks: one spelling per trial id

    @model_validator(mode="after")
    def _compile_mode_needs_networks(self) -> TrainConfig:
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(
                f"train.compile_mode = {self.compile_mode!r} needs networks to compile; set "
                "train.compile, e.g. --set 'train.compile=[render_net, discriminator]'")
        return self


class TrackingConfig(Schema):
    """Weights & Biases logging."""

    wandb: bool = False  # log this run to W&B
    project: str = "ssgan3d-harness"  # W&B project
    entity: str | None = None  # W&B entity (user or team); None = the default
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: offline w/o login
    group: str | None = None  # W&B group (the sweep name for sweep trials)


class EvalConfig(Schema):
    """The evaluation suite (`python -m harness.evaluate`); the defaults are the papers' counts.

    A sweep folds its `metrics:` and weight files in here, so a trial's config.yaml records
    what was measured and how."""

    # metrics a trial measures (harness.metrics.registry names); None: the default set
    metrics: list[str] | None = None
    # local weight files (nothing is downloaded): torch-fidelity's Inception (FID on real
    # data), an insightface ArcFace .onnx (id metric on real data), an SCRFD .onnx (aligned
    # ArcFace crops); where a file lives is not part of a trial's id (harness.launch.spec)
    inception_weights: str | None = None
    arcface_onnx: str | None = None
    face_detector_onnx: str | None = None
    cameras: Literal["prior", "dataset"] = "prior"  # FID/KID poses: camera prior or data poses
    # FID/KID features; auto: synthface-v2 on synthetic data, inception-v3-compat on real data
    # (synthface-v1: the earlier, realism-blind network, for reproducing old numbers)
    fid_extractor: Literal["auto", "synthface-v2", "synthface-v1", "inception-v3-compat"] = "auto"
    fid_samples: int = Field(50_000, ge=2)  # generated images for FID/KID (vs all real images)
    kid_subset_size: int = Field(1000, ge=2)  # KID subset size, capped by both image counts
    kid_subsets: int = Field(100, ge=1)  # KID subsets averaged
    id_samples: int = Field(1024, ge=2)  # latents for identity consistency, two poses each
    id_crop: float = Field(0.8, gt=0, le=1)  # ArcFace: centre crop side, fraction of the image
    # ArcFace with --face-detector-onnx: SCRFD input side (pixels; portraits are resized to it)
    id_detector_size: int = Field(640, ge=32, multiple_of=32)
    id_detector_threshold: float = Field(0.5, gt=0, lt=1)  # SCRFD face score to align by
    disentangle_samples: int = Field(1000, ge=1)  # latents for D_mean (3D-SSGAN Table 1)
    # what a part edit replaces: "part", each model's localised edit (docs/part-edits.md), or
    # those codes of the part ("both", "shape", "texture"; for IDE-3D "shape" is global)
    edit_what: Literal["part", "both", "shape", "texture"] = "part"
    # masked D_mean: "image", averaged over W x H (the paper's), or "outside" the region only
    masked_d_mean: Literal["image", "outside"] = "image"
    edit_region: Literal["union", "original", "edited"] = "union"  # part pixels masked D_mean drops
    difference_maps: int = Field(4, ge=0)  # samples whose difference maps are kept for figures
    view_samples: int = Field(1024, ge=1)  # latents rendered at two poses for view consistency
    class_samples: int = Field(1000, ge=1)  # masks for the class-frequency TV distance
    batch_size: int = Field(32, ge=1)  # images per generator call

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str] | None) -> list[str] | None:
        return None if names is None else metric_registry.in_running_order(names)


class ExperimentConfig(Schema):
    """One run: model, data, training, tracking and evaluation settings."""

    preset: Literal["smoke", "cpu", "paper"] = DEFAULT_PRESET
    model: SerializeAsAny[ModelConfig]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    evaluate: EvalConfig = EvalConfig()


# Harness-side presets (model-side presets live with each model in models/).
HARNESS_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"identities": 24, "views": 2, "flip": False},
        "train": {"iterations": 12, "batch_size": 4, "checkpoint_every": 6, "log_every": 2,
                  "sample_every": 6, "ema_kimg": 0.01},
        "evaluate": {"fid_samples": 32, "kid_subset_size": 16, "kid_subsets": 10,
                     "id_samples": 8, "disentangle_samples": 4, "difference_maps": 2,
                     "view_samples": 8, "class_samples": 8, "batch_size": 16},
    },
    "cpu": {
        "data": {"identities": 1000, "views": 4},
        # R1 weights shrink with the image area (StyleGAN2-ADA: gamma ~ R^2): SSGAN's 10 and
        # 1000 at 512 px become 0.04 and 3.9 at 32 px; 0.1 and 10 measured better than 10 and
        # 1000, which kept the generator at noise for the first 600 iterations.
        # Batch 4 (the paper's) for 560 steps: about 3 minutes on a 2-core CPU, and more
        # updates than batch 8 (2.0 it/s against 3.4 it/s at batch 4). What 560 steps buy:
        # head-shaped images whose masks follow the heads; recognisable portraits need about
        # 2,000 steps here (train.iterations: 2000, ~10-15 minutes) or a GPU, so the sweeps
        # that compare settings (sweeps/reproduce_*.yaml) train 2,000 steps.
        "train": {"iterations": 560, "batch_size": 4, "checkpoint_every": 280, "log_every": 20,
                  "sample_every": 140, "ema_kimg": 0.25, "r1_gamma_image": 0.1,
                  "r1_gamma_mask": 10.0},
        "evaluate": {"fid_samples": 2000, "id_samples": 256, "disentangle_samples": 50,
                     "view_samples": 256, "batch_size": 16},
    },
    "paper": {},
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in recursively (override wins)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UserError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set train.lr=0.001")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`; a UserError for a missing, non-UTF-8, unreadable or
    non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        bad = error.object[error.start]
        raise UserError(f"{path}: not UTF-8 text (byte {error.start} is {bad:#04x}); save the "
                        "file as UTF-8, or restore it if it was damaged") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"{path}:{where}: {problem}; fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


class _Layers:
    """Config layers with the origin of every leaf key, for error messages."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.origin: dict[str, tuple[int, str]] = {}  # leaf key -> (layer number, layer name)

    def add(self, tree: dict[str, Any], origin: str) -> None:
        self.tree = deep_merge(self.tree, tree)
        for key in _leaves(tree):
            self.origin[key] = (len(self.origin) + 1, origin)

    def where(self, loc: tuple[Any, ...]) -> str:
        """The layer that set `loc`, or for a section the last layer that set a key in it."""
        for end in range(len(loc), 0, -1):
            key = ".".join(str(part) for part in loc[:end])
            if key in self.origin:
                return self.origin[key][1]
            inside = [self.origin[k] for k in self.origin if k.startswith(key + ".")]
            if inside:
                return max(inside)[1]
        return "config"


def validation_error(error: ValidationError, where: str,
                     known_at: Callable[[tuple[str, ...]], list[str]],
                     prefix: tuple[str, ...] = ()) -> UserError:
    """One line for the first problem pydantic found: `where: ...` with the dotted key
    (`prefix` + the error's location), a did-you-mean hint for an unknown key (`known_at`
    gives the known keys of a section) or what is wrong with the value."""
    first = error.errors()[0]
    loc = prefix + tuple(str(part) for part in first["loc"])
    path = ".".join(loc)
    if first["type"] == "extra_forbidden":
        choices = known_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], choices, n=1)
        hint = f"did you mean {'.'.join((*loc[:-1], close[0]))!r}?" if close else (
            f"known keys here: {', '.join(choices)}" if choices else "remove it")
        return UserError(f"{where}: unknown key {path!r}; {hint}")
    if first["type"] == "missing":  # its input is the enclosing section, not a value
        return UserError(f"{where}: {path} is required; add {loc[-1]}: to "
                         f"{'.'.join(loc[:-1]) or 'the file'}")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" or not path:
        return UserError(f"{where}: {path + ': ' if path else ''}{message}")
    return UserError(f"{where}: {path} = {first.get('input')!r} is invalid: {message}")


def _format_validation_error(
    error: ValidationError, layers: _Layers, prefix: tuple[str, ...], known: dict[str, Any]
) -> UserError:
    def known_at(section_loc: tuple[str, ...]) -> list[str]:
        section: Any = known
        for part in section_loc:
            section = section.get(part, {}) if isinstance(section, dict) else {}
        return sorted(section) if isinstance(section, dict) else []

    loc = prefix + tuple(str(part) for part in error.errors()[0]["loc"])
    return validation_error(error, layers.where(loc), known_at, prefix)


def _known_keys(model_config: type[ModelConfig]) -> dict[str, Any]:
    def fields(schema: type[Schema]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, info in schema.model_fields.items():
            annotation = info.annotation
            nested = isinstance(annotation, type) and issubclass(annotation, Schema)
            out[name] = fields(annotation) if nested else None
        return out

    known = fields(ExperimentConfig)
    known["model"] = fields(model_config)
    return known


def resolve_config(
    file_config: dict[str, Any] | None = None,
    file_name: str = "config",
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> ExperimentConfig:
    """Resolve and validate a config from a YAML mapping, a preset and `--set` overrides.

    `preset` (from the command line) wins over a `preset:` key in the file.
    """
    file_config = dict(file_config or {})
    for section in ("model", "data", "train", "tracking", "evaluate"):
        if not isinstance(file_config.get(section, {}), dict):
            raise UserError(f"{file_name}: {section} must be a mapping of settings")
    override_tree: dict[str, Any] = {}
    for text in overrides or []:
        path, value = parse_override(text)
        _set_path(override_tree, path, value)
    chosen = preset or override_tree.get("preset") or file_config.get("preset") or DEFAULT_PRESET
    if chosen not in PRESET_NAMES:
        raise UserError(f"preset {chosen!r} is unknown; choose one of {', '.join(PRESET_NAMES)}")
    name = (
        override_tree.get("model", {}).get("name")
        or (file_config.get("model") or {}).get("name")
        or DEFAULT_MODEL
    )
    try:
        spec = get_model(str(name))
    except KeyError:
        origin = "--set" if override_tree.get("model", {}).get("name") else file_name
        raise UserError(
            f"{origin}: model.name = {name!r} is not a registered model; choose one of "
            f"{', '.join(model_names())}"
        ) from None

    layers = _Layers()
    layers.add({"model": {"name": spec.name}}, "defaults")
    layers.add(HARNESS_PRESETS[chosen], f"preset {chosen}")
    layers.add({"model": spec.presets.get(chosen, {})}, f"preset {chosen} of {spec.name}")
    layers.add(file_config, file_name)
    layers.add(override_tree, "--set")
    layers.add({"preset": chosen}, "--preset" if preset else layers.where(("preset",)))
    tree = layers.tree
    known = _known_keys(spec.config_class)
    try:
        model = spec.config_class.model_validate(tree["model"])
    except ValidationError as error:
        raise _format_validation_error(error, layers, ("model",), known) from None
    try:
        config = ExperimentConfig.model_validate({**tree, "model": model})
    except ValidationError as error:
        raise _format_validation_error(error, layers, (), known) from None
    if config.train.threads == 0:
        config.train.threads = available_cpus()
    return config


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM allocation, taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def with_added_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config (run directory, snapshot) with the keys added since it was written set to
    the values it was trained with (`ADDED_KEYS` of the model's config and of TrainConfig)."""
    model = saved.get("model")
    if not isinstance(model, dict):
        return saved  # resolve_config names what is wrong
    try:
        model_added = get_model(str(model.get("name", DEFAULT_MODEL))).config_class.ADDED_KEYS
    except KeyError:
        return saved
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    return {**saved, "model": {**model_added, **model},
            "train": {**TrainConfig.ADDED_KEYS, **train}}


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> ExperimentConfig:
    """Resolve a config from an optional YAML file, preset and `--set` overrides."""
    file_config = read_yaml(path) if path else {}
    return resolve_config(file_config, str(path) if path else "config", preset, overrides)


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON types (reloading it reproduces the config)."""
    return config.model_dump(mode="json")


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (for W&B's parallel coordinates)."""
    return _leaves(tree)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: dotted keys (sweep files) as a config mapping."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        _set_path(tree, key.split("."), value)
    return tree
