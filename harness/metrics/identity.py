"""Identity consistency across views (EG3D / IDE-3D protocol).

N latents are each rendered at two independent poses from the camera prior; both images are
embedded by a face-identity network and the metric is the mean (and std) over latents of the
cosine similarity of the two embeddings. Higher is more consistent.

Embedders share one interface, `embed((N, 3, H, W) float images in [-1, 1]) -> (N, D)` unit
vectors:
- `synthface-v2` (synthetic data): the shipped CNN trained with an ArcFace loss (beside its
  dense multi-task losses) on the synthetic multi-view identities; it resizes any input to
  64x64 itself.
- ArcFace ONNX (real data): an insightface recognition model loaded from a local file with
  `insightface.model_zoo.get_model`. The portrait is NOT aligned by landmarks (no detector is
  used): our cameras look at the head centre, so a fixed centre square of side
  `evaluate.id_crop` (fraction of the image side, default 0.8) is cropped, resized to 112x112
  (area averaging) and given to the model as BGR uint8, its expected input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import ExperimentConfig
from harness.errors import UserError
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.extractors.synthface import load_synthface
from harness.metrics.generation import (
    MetricResult,
    batches,
    device_of,
    latents,
    prior_camera_pairs,
    render,
    streams,
    take,
    to_uint8,
)

ARCFACE_SIZE = 112  # pixels, ArcFace's input side


class Embedder(Protocol):
    """A face-identity embedding network."""

    name: str

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float images in [-1, 1] -> (N, D) L2-normalised embeddings (CPU)."""
        ...


class SynthFaceEmbedder:
    """The shipped synthface network's identity embedding (128-d), `synthface-v2`."""

    name = SYNTHFACE

    def __init__(self, device: torch.device):
        self.net = load_synthface().to(device)
        self.device = device

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (N, 128)."""
        with torch.inference_mode():
            return self.net.embed(images.to(self.device)).float().cpu()


def centre_crops(images: torch.Tensor, fraction: float, size: int = ARCFACE_SIZE) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> (N, size, size, 3) BGR uint8 centre crops.

    The crop is the centred square of side round(fraction * W), resized by area averaging
    (bilinear when enlarging).
    """
    side = images.shape[-1]
    crop = max(1, round(fraction * side))
    top = (images.shape[-2] - crop) // 2
    left = (side - crop) // 2
    x = images[..., top : top + crop, left : left + crop].float()
    mode = "area" if crop >= size else "bilinear"
    x = F.interpolate(x, size=(size, size), mode=mode,
                      **({} if mode == "area" else {"align_corners": False}))
    rgb = to_uint8(x).permute(0, 2, 3, 1)  # (N, size, size, 3)
    return np.ascontiguousarray(rgb.flip(-1).cpu().numpy())  # RGB -> BGR


def load_arcface(path: str | Path, device: torch.device) -> object:
    """An insightface ArcFace recognition model from a local ONNX file (never downloads)."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".onnx":
        raise UserError(
            f"--arcface-onnx {path}: no such .onnx file; give the path of an insightface ArcFace "
            "recognition model (e.g. buffalo_l/w600k_r50.onnx, copied to this machine by hand: "
            "nothing is downloaded)"
        )
    try:
        import onnxruntime
        from insightface.model_zoo import get_model
    except ImportError as error:
        raise UserError(
            f"identity metric with ArcFace needs insightface and onnxruntime ({error}); "
            "pip install insightface onnxruntime"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        model = get_model(str(path.resolve()), providers=providers, download=False)
    except Exception as error:  # noqa: BLE001 - any failure to load is the user's file
        raise UserError(
            f"--arcface-onnx {path}: cannot load it with insightface ({type(error).__name__}: "
            f"{error}); give an ArcFace recognition model"
        ) from None
    if getattr(model, "taskname", None) != "recognition":
        raise UserError(
            f"--arcface-onnx {path}: insightface reads it as a "
            f"{getattr(model, 'taskname', 'unknown')} model, not a recognition (ArcFace) model"
        )
    return model


class ArcFaceEmbedder:
    """An insightface ArcFace ONNX model on fixed centre crops (see the module docstring)."""

    def __init__(self, path: str | Path, crop: float, device: torch.device):
        self.model = load_arcface(path, device)
        self.name = f"arcface:{Path(path).name}"
        self.crop = crop

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (N, 512 for the insightface models)."""
        crops = centre_crops(images, self.crop)
        features = self.model.get_feat(list(crops))  # (N, D) float32
        return F.normalize(torch.from_numpy(np.asarray(features, dtype=np.float32)), dim=1)


def choose_embedder(config: ExperimentConfig, arcface_onnx: str | Path | None,
                    device: torch.device) -> Embedder:
    """ArcFace when a model path is given; synthface-v2 on synthetic data; else a UserError."""
    if arcface_onnx is not None:
        return ArcFaceEmbedder(arcface_onnx, config.evaluate.id_crop, device)
    if config.data.source == "synthetic":
        return SynthFaceEmbedder(device)
    raise UserError(
        f"identity consistency on {config.data.source} needs an ArcFace model: pass "
        "--arcface-onnx PATH (an insightface recognition .onnx; nothing is downloaded), or "
        "leave out the id metric (--metrics fid,kid,disentangle,views)"
    )


def cosine_pairs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N,) cosine similarity of matching rows of two (N, D) embedding sets."""
    return F.cosine_similarity(first.double(), second.double(), dim=1).clamp(-1, 1)


def evaluate_identity(
    generator: torch.nn.Module, embedder: Embedder, count: int, seed: int, batch_size: int
) -> MetricResult:
    """Mean and std over `count` latents of cos(embed(view 1), embed(view 2))."""
    device = device_of(generator)
    latent_stream, camera_stream = streams(seed, "id")
    view_1, view_2 = prior_camera_pairs(count, camera_stream, device)
    scores = []
    for batch in batches(count, batch_size):
        w = latents(generator, batch.stop - batch.start, latent_stream)
        first = render(generator, w, *take(view_1, batch))["image"]
        second = render(generator, w, *take(view_2, batch))["image"]
        scores.append(cosine_pairs(embedder.embed(first), embedder.embed(second)))
    similarity = torch.cat(scores)
    values = {"id_consistency": float(similarity.mean()),
              "id_consistency_std": float(similarity.std(unbiased=False)),
              "id_model": embedder.name}
    return MetricResult(values, num_samples=count, images=2 * count)
