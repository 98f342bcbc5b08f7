"""The synthface networks: small CNNs trained on the synthetic portraits, for FID/KID and identity.

A network sees 64x64 RGB; any input (uint8 in [0, 255], or float in [-1, 1]) of shape
(N, 3, H, W) is resized to 64x64 bilinearly inside. It gives two features:

- `fid`: the feature used for FID and KID on synthetic data;
- `embedding`: a 128-d identity embedding, L2-normalised, trained with an ArcFace (additive
  angular margin) head over the training identities (the identity-consistency metric).

Two versions ship beside this file, each registered with torch-fidelity under its name:

- `synthface-v2` (`NAME`, the default: `evaluate.fid_extractor=auto` on synthetic data, and the
  identity embedder). Multi-task, so that its feature says what a portrait shows. From the
  flattened 4x4 last stage (the layout is kept, not averaged away) a linear layer and a batch
  norm without affine parameters give a 64-d code; during training a small decoder
  reconstructs the 13-class mask, the depth and the RGB image (32x32) from it, a linear head
  regresses the camera yaw and pitch, and the ArcFace head reads the embedding made from it.
  A dense head on the first two stages labels each pixel with its class (trained against the
  same masks); the square roots of its 13 class areas are the rest of the feature. The `fid`
  feature (77-d) is the code and the areas, each dimension standardised on the training data
  (exact batch-norm statistics recomputed after training), which keeps the real-vs-real floor
  low: at the cpu preset (2,000 vs 4,000 images, 32x32) FID is 1.8 for unseen real images
  against the real set and 2.7 between the identity-disjoint halves of the real set, against
  27 for a blur of sigma 1 pixel, 8.7 for faces whose eyes, brows, mouth and nose are painted
  over, and 86-295 for 3D-SSGAN generators after 1-600 cpu-preset iterations (blobs, not
  faces). Held-out verification AUC 0.9999. Trained on data seed 1 (2,000 identities), so the
  default data (seed 0) is unseen.
- `synthface-v1`: the first network, trained only with the ArcFace loss (and colour, noise and
  shift augmentation); its `fid` feature is the 256-d globally average-pooled last stage. It
  is nearly blind to realism: painted-over faces 1.30 against a real floor of 1.30, a blur of
  sigma 1 pixel 1.8, the same generators 14.2-30.5. Kept so that earlier numbers can be
  reproduced (`--set evaluate.fid_extractor=synthface-v1`); not for new comparisons.

Exact training commands (2 CPU cores; the data set renders once and is cached; v2 took 18
minutes on a shared machine, writing to another `--out` and then copied here):

    OMP_NUM_THREADS=1 python -m harness.metrics.extractors.train_synthface --version v2 \
        --threads 1 --out harness/metrics/extractors/synthface-v2.pt
    python -m harness.metrics.extractors.train_synthface --version v1 \
        --out harness/metrics/extractors/synthface-v1.pt

(each checkpoint also records the command that wrote it, its data set's content hash and its
held-out verification AUC). `load_synthface()` loads the shipped weights; importing this module
registers both extractors, so `torch_fidelity.calculate_metrics(..., feature_extractor=
"synthface-v2", cuda=False)` works.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from harness.data.classes import NUM_CLASSES
from harness.errors import UserError

V1, V2 = "synthface-v1", "synthface-v2"
NAMES = (V1, V2)  # every shipped version, registered with torch-fidelity
NAME = V2  # the current version: FID on synthetic data (`auto`) and identity consistency
INPUT_SIZE = 64  # pixels: every input is resized to this side
EMBEDDING_DIM = 128  # identity embedding
FEATURES = ("fid", "embedding")


def weights_path(name: str = NAME) -> Path:
    """The shipped weights of version `name` (beside this file)."""
    if name not in NAMES:
        raise UserError(f"unknown synthface version {name!r}; choose one of {', '.join(NAMES)}")
    return Path(__file__).with_name(f"{name}.pt")


WEIGHTS_PATH = weights_path(NAME)


def weights_digest(path: str | Path) -> str:
    """The first 12 hex digits of the SHA-256 of a weights file (keys cached statistics)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 in [0, 255] or float in [-1, 1] -> float (N, 3, 64, 64) in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        shrink = x.shape[-1] > INPUT_SIZE or x.shape[-2] > INPUT_SIZE
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
            antialias=shrink,
        )
    return x


class SynthFaceNet(nn.Module):
    """A small VGG-like CNN: 64x64 input, stride-2 stages, a feature and an embedding.

    `code_dim` 0 (v1): the feature is the globally average-pooled last stage (`widths[-1]`-d)
    and the embedding a linear map of it.
    `code_dim` > 0 (v2): a `code_dim`-d code, a linear map of the flattened last stage followed
    by a batch norm without affine parameters (unit variance per dimension on the training
    data), gives the embedding; a dense head on the first two stages labels each pixel of the
    32x32 grid with one of the 13 classes (`parts`). The feature is the code and, batch-normed
    the same way, the square roots of the 13 class areas (mean softmax over the grid): the
    areas say which parts the image actually shows, where the code, trained to reconstruct
    the whole mask, may infer small parts from the head's shape and pose.
    """

    def __init__(
        self, widths: tuple[int, ...] = (32, 64, 128, 256), embedding_dim: int = EMBEDDING_DIM,
        code_dim: int = 0,
    ):
        super().__init__()
        self.arch = {"widths": list(widths), "embedding_dim": embedding_dim}
        if code_dim:
            self.arch["code_dim"] = code_dim
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [_conv(cin, width, 2), _conv(width, width, 1)]
            cin = width
        self.body = nn.Sequential(*layers)
        side = INPUT_SIZE >> len(widths)  # the last stage's side, pixels
        self.code = self.parts = self.areas = None
        if code_dim:
            self.code = nn.Sequential(
                nn.Flatten(), nn.Linear(cin * side * side, code_dim),
                nn.BatchNorm1d(code_dim, affine=False),
            )
            hidden = widths[0] + widths[1]  # stage 1 (32x32) and stage 2 upsampled to 32x32
            self.parts = nn.Sequential(
                nn.Conv2d(hidden, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True),
                nn.Conv2d(48, NUM_CLASSES, 1),
            )
            self.areas = nn.BatchNorm1d(NUM_CLASSES, affine=False)
        self.feature_dim = code_dim + NUM_CLASSES if code_dim else cin
        self.head = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(code_dim or cin, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """feature (N, F), raw embedding (N, 128); v2 also code (N, code_dim) and part logits
        (N, 13, 32, 32)."""
        x = to_network_input(images)
        if self.code is None:
            pooled = self.body(x).mean(dim=(2, 3))  # (N, C)
            return {"feature": pooled, "embedding": self.head(pooled)}
        stages = []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in (1, 3):  # the ends of stages 1 and 2
                stages.append(x)
        code = self.code(x)  # (N, code_dim)
        fine = torch.cat([stages[0], F.interpolate(stages[1], scale_factor=2.0)], dim=1)
        parts = self.parts(fine)  # (N, 13, 32, 32)
        areas = self.areas(parts.softmax(dim=1).mean(dim=(2, 3)).sqrt())  # (N, 13)
        return {"feature": torch.cat([code, areas], dim=1), "embedding": self.head(code),
                "code": code, "parts": parts}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature (N, F), raw embedding (N, 128)) of uint8 or [-1, 1] float images."""
        out = self.outputs(images)
        return out["feature"], out["embedding"]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised identity embeddings (N, 128) in eval mode, batched."""
        was_training = self.training
        self.eval()
        out = [
            F.normalize(self(images[i : i + batch_size])[1], dim=1)
            for i in range(0, len(images), batch_size)
        ]
        self.train(was_training)
        return torch.cat(out)


class ArcFaceHead(nn.Module):
    """Additive angular margin logits (ArcFace): s * cos(theta + m) for the target class."""

    def __init__(self, embedding_dim: int, classes: int, scale: float = 30.0, margin: float = 0.3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale
        self.margin = margin

    def forward(
        self, embedding: torch.Tensor, labels: torch.Tensor, margin: float | None = None
    ) -> torch.Tensor:
        """Logits (N, classes); `margin` overrides the configured margin (for a warm-up)."""
        m = self.margin if margin is None else margin
        cosine = F.normalize(embedding, dim=1) @ F.normalize(self.weight, dim=1).t()
        cosine = cosine.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        sine = torch.sqrt(1.0 - cosine * cosine)
        with_margin = cosine * math.cos(m) - sine * math.sin(m)
        # Past theta = pi - m, cos(theta + m) stops decreasing: use the usual linear fallback.
        with_margin = torch.where(
            cosine > math.cos(math.pi - m), with_margin, cosine - math.sin(math.pi - m) * m
        )
        target = F.one_hot(labels, cosine.shape[1]).bool()
        return self.scale * torch.where(target, with_margin, cosine)


def load_synthface(path: str | Path | None = None, name: str = NAME) -> SynthFaceNet:
    """The trained network (eval mode) from `path`, by default the shipped weights of `name`."""
    path = Path(path) if path is not None else weights_path(name)
    if not path.is_file():
        raise UserError(
            f"{path}: synthface weights not found; train them with `python -m "
            f"harness.metrics.extractors.train_synthface --version {name[-2:]} --out {path}`"
        )
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        net = SynthFaceNet(
            widths=tuple(checkpoint["arch"]["widths"]),
            embedding_dim=int(checkpoint["arch"]["embedding_dim"]),
            code_dim=int(checkpoint["arch"].get("code_dim", 0)),
        )
        net.load_state_dict(checkpoint["state_dict"])
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(
            f"{path}: unreadable synthface weights ({type(error).__name__}: {error}); "
            "train them again with `python -m harness.metrics.extractors.train_synthface`"
        ) from error
    return net.eval()


class SynthFaceExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor `synthface-v1` / `-v2`: features "fid" and "embedding".

    Takes uint8 (N, 3, H, W), returns a tuple in the order of the requested features. The
    weights come from `feature_extractor_weights_path` if given, else the shipped file of the
    registered name.
    """

    def __init__(self, name: str, features_list: list[str], **kwargs: Any):
        super().__init__(name, features_list)
        self.net = load_synthface(kwargs.get("feature_extractor_weights_path"), name)
        self.net.requires_grad_(False)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        """The features this extractor computes."""
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        """The pooled feature serves FID, KID and PRC (there are no class logits for ISC)."""
        if metric not in ("fid", "kid", "prc"):
            raise ValueError(f"synthface provides no feature for metric {metric!r}")
        return "fid"

    @staticmethod
    def can_be_compiled() -> bool:
        """Small enough that compiling is not worth it."""
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        """A uint8 batch of the network's input size."""
        return torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002
        """Features of uint8 images, in the order of the requested features list."""
        feature, embedding = self.net(input)
        features = {"fid": feature, "embedding": F.normalize(embedding, dim=1)}
        return tuple(features[name] for name in self.features_list)


def register_synthface() -> None:
    """Register every version (`synthface-v1`, `synthface-v2`) with torch-fidelity, once."""
    for name in NAMES:
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, SynthFaceExtractor)


register_synthface()
