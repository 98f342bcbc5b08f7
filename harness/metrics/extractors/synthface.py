"""`synthface-v1`: a small CNN trained on the synthetic portraits, for FID/KID and identity.

The network sees 64x64 RGB; any input (uint8 in [0, 255], or float in [-1, 1]) of shape
(N, 3, H, W) is resized to 64x64 bilinearly inside. It gives two features:

- `fid`: the penultimate, globally average-pooled feature (`FEATURE_DIM`, 256-d), used for FID
  and KID on synthetic data;
- `embedding`: a 128-d identity embedding, L2-normalised, trained with an ArcFace (additive
  angular margin) head over the training identities.

`load_synthface()` loads the shipped weights (`synthface-v1.pt` beside this file); importing this
module registers the torch-fidelity feature extractor `synthface-v1` (`SynthFaceExtractor`), so
`torch_fidelity.calculate_metrics(..., feature_extractor="synthface-v1", cuda=False)` works.
The weights are trained by `python -m harness.metrics.extractors.train_synthface`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from harness.errors import UserError

NAME = "synthface-v1"
INPUT_SIZE = 64
FEATURE_DIM = 256
EMBEDDING_DIM = 128
WEIGHTS_PATH = Path(__file__).with_name(f"{NAME}.pt")
FEATURES = ("fid", "embedding")


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
    """A small VGG-like CNN: 64x64 input, four stride-2 stages, pooled feature, embedding."""

    def __init__(
        self, widths: tuple[int, ...] = (32, 64, 128, 256), embedding_dim: int = EMBEDDING_DIM
    ):
        super().__init__()
        self.arch = {"widths": list(widths), "embedding_dim": embedding_dim}
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [_conv(cin, width, 2), _conv(width, width, 1)]
            cin = width
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(cin, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled feature (N, 256), raw embedding (N, 128)) of uint8 or [-1, 1] float images."""
        x = self.body(to_network_input(images))
        pooled = x.mean(dim=(2, 3))
        return pooled, self.head(pooled)

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


def load_synthface(path: str | Path | None = None) -> SynthFaceNet:
    """The trained network (eval mode) from `path`, by default the shipped `synthface-v1.pt`."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise UserError(
            f"{path}: synthface weights not found; train them with `python -m "
            f"harness.metrics.extractors.train_synthface --out {path}`"
        )
    try:
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        net = SynthFaceNet(
            widths=tuple(checkpoint["arch"]["widths"]),
            embedding_dim=int(checkpoint["arch"]["embedding_dim"]),
        )
        net.load_state_dict(checkpoint["state_dict"])
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(
            f"{path}: unreadable synthface weights ({type(error).__name__}: {error}); "
            "train them again with `python -m harness.metrics.extractors.train_synthface`"
        ) from error
    return net.eval()


class SynthFaceExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor `synthface-v1`: features "fid" and "embedding".

    Takes uint8 (N, 3, H, W), returns a tuple in the order of the requested features. The
    weights come from `feature_extractor_weights_path` if given, else the shipped file.
    """

    def __init__(self, name: str, features_list: list[str], **kwargs: Any):
        super().__init__(name, features_list)
        self.net = load_synthface(kwargs.get("feature_extractor_weights_path"))
        self.net.requires_grad_(False)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        """The features this extractor computes."""
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        """The pooled feature serves FID, KID and PRC (there are no class logits for ISC)."""
        if metric not in ("fid", "kid", "prc"):
            raise ValueError(f"{NAME} provides no feature for metric {metric!r}")
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
        pooled, embedding = self.net(input)
        features = {"fid": pooled, "embedding": F.normalize(embedding, dim=1)}
        return tuple(features[name] for name in self.features_list)


def register_synthface() -> None:
    """Register `synthface-v1` with torch-fidelity, once."""
    if NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(NAME, SynthFaceExtractor)


register_synthface()
