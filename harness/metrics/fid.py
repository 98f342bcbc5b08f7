"""FID and KID with torch-fidelity's feature extractors and formulas, streamed and cached.

Generated images (EMA generator, truncation 1, cameras from `evaluate.cameras`) go to the
extractor as uint8 batch by batch, so 50,000 images never sit in memory at once. The real
images' features are computed once per (extractor, resolution, dataset content) and cached at
`<data cache>/fid-stats/<extractor key>-<resolution>-<content hash>.npz` (mu, sigma and the raw
features, which KID needs), written atomically. The extractor key is the extractor's name plus the
digest of the weights file it loads (Inception weights from another file, or retrained synthface
weights under the same name, get new statistics). torch-fidelity's own cache is keyed by a name only
and would silently reuse statistics of changed data, so it is not used.

Extractors: `synthface-v2` (the default on synthetic data) and `synthface-v1` (shipped networks
trained on the synthetic portraits, see `harness.metrics.extractors.synthface`; their FID is not
an Inception FID and is always printed with the extractor's name; v1 is nearly blind to realism
and is kept only to reproduce earlier numbers) and `inception-v3-compat` (torch-fidelity's port
of the TF Inception, comparable with published numbers; its weights are never downloaded: pass
`--inception-weights PATH` or put the file in torch's hub cache).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import ExperimentConfig
from harness.data.loading import cache_root, prepared_dataset_dir
from harness.data.prepared import read_meta
from harness.errors import UserError
from harness.io import atomic_write
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.extractors.synthface import NAMES as SYNTHFACE_NAMES
from harness.metrics.extractors.synthface import (
    register_synthface,
    weights_digest,
    weights_path,
)
from harness.metrics.generation import (
    CameraSampler,
    MetricContext,
    MetricResult,
    batches,
    camera_sampler,
    device_of,
    latents,
    render,
    streams,
    take,
    to_uint8,
)

log = logging.getLogger(__name__)

INCEPTION = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name
EXTRACTOR_BATCH = 64  # real images per extractor call
KID_WHOLE_MAX = 8_000  # images in both sets up to which KID may use whole kernel matrices


def default_inception_path() -> Path:
    """Where torch-fidelity looks for the Inception weights: torch's hub checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights(path: str | Path | None) -> Path:
    """The Inception weights file to use; a UserError (no download) when it is missing."""
    found = Path(path).expanduser() if path else default_inception_path()
    if not found.is_file():
        raise UserError(
            f"Inception weights not found at {found}: FID/KID need torch-fidelity's "
            f"{INCEPTION_FILE} and this machine cannot download it; copy it to "
            f"{default_inception_path()} or pass --inception-weights PATH"
        )
    problem = _inception_problem(found)
    if problem:
        raise UserError(
            f"{found}: not Inception weights ({problem}); FID/KID need torch-fidelity's "
            f"{INCEPTION_FILE}: pass --inception-weights PATH to that file"
        )
    return found


def _inception_problem(path: Path) -> str | None:
    """Why inception-v3-compat cannot load `path`, or None when it can."""
    from torch_fidelity.utils import create_feature_extractor

    try:  # tensors only, before torch-fidelity unpickles the file without restrictions
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a text file raises KeyError, an empty one EOFError, ...
        return "not a torch file of tensors"
    try:
        create_feature_extractor(INCEPTION, ["2048"], cuda=False, verbose=False,
                                 feature_extractor_weights_path=str(path))
    except (RuntimeError, TypeError):  # load_state_dict: other keys, shapes or not a dict
        return f"its tensors are not {INCEPTION}'s"
    return None


def choose_extractor(
    config: ExperimentConfig, inception_path: str | Path | None
) -> tuple[str, Path | None]:
    """(extractor name, weights path or None) for `evaluate.fid_extractor` and the data; a
    warning when `inception_path` is given but another extractor is used."""
    name = config.evaluate.fid_extractor
    if name == "auto":
        name = SYNTHFACE if config.data.source == "synthetic" else INCEPTION
    if name == INCEPTION:
        return name, inception_weights(inception_path)
    if inception_path:
        log.warning("--inception-weights %s is not used: FID/KID use %s on %s data "
                    "(--set evaluate.fid_extractor=%s for an Inception FID)", inception_path,
                    name, config.data.source, INCEPTION)
    return name, None


def display_name(extractor: str) -> str:
    """How a number from `extractor` is labelled: FID (synthface-v2, not Inception) = ..."""
    return extractor if extractor == INCEPTION else f"{extractor}, not Inception"


class Features:
    """A torch-fidelity feature extractor giving its FID feature for uint8 image batches."""

    def __init__(self, name: str, weights: Path | None, device: torch.device):
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
        from torch_fidelity.utils import create_feature_extractor

        register_synthface()
        self.layer = FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("fid")
        kwargs: dict[str, Any] = {"verbose": False}
        if weights is not None:
            kwargs["feature_extractor_weights_path"] = str(weights)
        self.extractor = create_feature_extractor(name, [self.layer], cuda=False, **kwargs)
        self.extractor.to(device)
        self.device = device
        self.weights = weights

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, F) float32 features, on the CPU."""
        with torch.inference_mode():
            out = self.extractor(images.to(self.device))
        return self.extractor.convert_features_tuple_to_dict(out)[self.layer].float().cpu()


class _Images(Dataset):
    """uint8 (3, R, R) images of a prepared dataset (every split), for torch-fidelity."""

    def __init__(self, path: Path):
        self.images = np.load(path / "images.npy", mmap_mode="r")  # (N, R, R, 3)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1)


def extractor_key(extractor: str, weights: Path | None = None) -> str:
    """The name of `extractor` in cache keys with the digest of the weights file it loads
    (`weights`; a synthface network's default is the shipped file), e.g.
    `synthface-v2.0123abcd4567`: other weights under the same name get their own statistics."""
    if weights is None and extractor in SYNTHFACE_NAMES:
        weights = weights_path(extractor)
    return extractor if weights is None else f"{extractor}.{weights_digest(weights)}"


def stats_path(config: ExperimentConfig, extractor: str, weights: Path | None = None
               ) -> tuple[Path, Path]:
    """(prepared dataset dir, cache file of its real features) for `extractor` (`weights`)."""
    data_dir = prepared_dataset_dir(config.data, config.model.resolution)
    digest = read_meta(data_dir)["content_hash"]
    name = f"{extractor_key(extractor, weights)}-{config.model.resolution}-{digest}.npz"
    return data_dir, cache_root(config.data) / "fid-stats" / name


def real_statistics(config: ExperimentConfig, features: Features, extractor: str
                    ) -> tuple[dict[str, np.ndarray], bool]:
    """(mu, sigma and features of every real image; whether they came from the cache)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics
    from torch_fidelity.utils import get_featuresdict_from_dataset

    data_dir, path = stats_path(config, extractor, features.weights)
    if path.is_file():
        try:
            with np.load(path) as cached:
                return {key: cached[key] for key in ("mu", "sigma", "features")}, True
        except (OSError, ValueError, KeyError):
            log.warning("%s: unreadable FID statistics, computing them again", path)
    log.info("computing real-image %s features of %s (cached in %s)", extractor, data_dir, path)
    featuresdict = get_featuresdict_from_dataset(
        _Images(data_dir), features.extractor, EXTRACTOR_BATCH, features.device.type == "cuda",
        save_cpu_ram=True, verbose=False,
    )
    real = featuresdict[features.layer].float().cpu()
    stats = {**fid_features_to_statistics(real.double()), "features": real.numpy()}
    atomic_write(path, lambda file: np.savez(file, **stats))
    return stats, False


def kid(x: torch.Tensor, y: torch.Tensor, subsets: int, subset_size: int, seed: int
        ) -> tuple[float, float]:
    """KID (mean, std over subsets) of features x (n1, d) and y (n2, d): torch-fidelity 0.4's
    estimator, the unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 averaged over
    `subsets` subsets of `subset_size` of each set, drawn by numpy's RandomState(seed) in
    torch-fidelity's order.

    Where the kernel matrices of the whole sets cost less than the subsets' own (small sets:
    the cpu preset's 2,000 generated and 4,000 real images; 8x less work there), every subset's
    sums come from them at once: with U the (n, subsets) indicator matrix of the subsets,
    sum_{i != j in S} K_ij = (u^T K u - diag(K)^T u) and sum_{i in S, j in S'} K_ij = u^T K v,
    in float64 (torch-fidelity sums in float32). Otherwise torch-fidelity computes it.
    """
    from torch_fidelity.metric_kid import kid_features_to_metric

    (n1, d), n2, m = x.shape, len(y), subset_size
    whole = (n1 * n1 + n2 * n2 + n1 * n2) * (d + subsets)  # multiply-adds, kernels and sums
    if n1 + n2 > KID_WHOLE_MAX or whole >= 3 * subsets * m * m * d:
        out = kid_features_to_metric(x, y, kid_subsets=subsets, kid_subset_size=m,
                                     rng_seed=seed, verbose=False)
        return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]
    rng = np.random.RandomState(seed)
    u, v = torch.zeros(n1, subsets, dtype=torch.float64), torch.zeros(n2, subsets,
                                                                        dtype=torch.float64)
    for s in range(subsets):
        u[rng.choice(n1, m, replace=False), s] = 1
        v[rng.choice(n2, m, replace=False), s] = 1

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (|a|, |b|), float64
        return (a.float() @ b.float().T).double().div_(d).add_(1).pow_(3)

    def within(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # (subsets,)
        k = kernel(a, a)
        return ((k @ w) * w).sum(0) - k.diagonal() @ w

    between = ((kernel(x, y) @ v) * u).sum(0)  # (subsets,)
    mmd2 = (within(x, u) + within(y, v)) / (m * (m - 1)) - 2 * between / (m * m)
    return mmd2.mean().item(), mmd2.std(correction=0).item()


def fid_kid(generated: torch.Tensor, real: dict[str, np.ndarray], subsets: int,
            subset_size: int, seed: int) -> dict[str, float]:
    """FID and KID (mean, std over subsets) between generated features and real statistics."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    fid = fid_statistics_to_metric(fid_features_to_statistics(generated.double()),
                                   {"mu": real["mu"], "sigma": real["sigma"]}, verbose=False)
    size = min(subset_size, len(generated), len(real["features"]))
    kid_mean, kid_std = kid(generated, torch.from_numpy(real["features"]), subsets, size, seed)
    return {"fid": fid["frechet_inception_distance"], "kid": kid_mean, "kid_std": kid_std}


def evaluate_fid(
    generator: torch.nn.Module,
    config: ExperimentConfig,
    cameras: CameraSampler,
    count: int,
    seed: int,
    extractor: str,
    weights: Path | None = None,
) -> MetricResult:
    """FID and KID of `count` generated images against every real image of the dataset.

    `extractor` and `weights` come from `choose_extractor`.
    """
    device = device_of(generator)
    features = Features(extractor, weights, device)
    real, cached = real_statistics(config, features, extractor)
    latent_stream, camera_stream = streams(seed, "fid")
    poses = cameras(count, camera_stream, device)
    generated = []
    for batch in batches(count, config.evaluate.batch_size):
        w = latents(generator, batch.stop - batch.start, latent_stream)
        image = render(generator, w, *take(poses, batch))["image"]
        generated.append(features(to_uint8(image)))
    values = fid_kid(torch.cat(generated), real, config.evaluate.kid_subsets,
                     config.evaluate.kid_subset_size, seed)
    values |= {"fid_extractor": extractor, "fid_real_images": len(real["features"]),
               "fid_real_cached": cached, "fid_cameras": config.evaluate.cameras}
    return MetricResult(values, num_samples=count, images=count)


def run(context: MetricContext) -> MetricResult:
    """FID and KID of the context's generator (registry entry of both)."""
    name, weights = context.extractor
    return evaluate_fid(context.generator, context.config, camera_sampler(context.config),
                        context.count, context.seed, name, weights)


def lines(values: dict[str, Any]) -> list[str]:
    """FID's line of the CLI summary."""
    if values.get("fid") is None:
        return []
    return [f"FID ({display_name(str(values.get('fid_extractor', '')))}) = {values['fid']:.4g}  "
            f"[{values['num_samples/fid']} generated vs {values['fid_real_images']} real images]"]


def kid_lines(values: dict[str, Any]) -> list[str]:
    """KID's line of the CLI summary."""
    if values.get("kid") is None:
        return []
    extractor = display_name(str(values.get("fid_extractor", "")))
    return [f"KID ({extractor}) = {values['kid']:.4g} +- {values['kid_std']:.2g}"]
