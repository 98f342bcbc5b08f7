"""Real-image inversion: a portrait (and optionally its mask) into the generator's latent space.

The per-slot latents of Eq. 1 (W+ : the base code and every part's shape and texture code) are
optimised with Adam from the mean latent w_avg in every slot, at a given camera, to minimise

    L = || G(w) - x ||^2  +  lambda_id (1 - cos(phi(G(w)), phi(x)))  [+ lambda_m CE(M(w), m)]

x the portrait at the generator's resolution, phi a differentiable identity network for the
data at hand (the shipped synthface-v2 on synthetic data, an insightface ArcFace .onnx
converted to torch with onnx2torch on real data), m the optional class mask and M(w) the
generator's mask logits. Optionally the generator is then fine-tuned a few steps at the found
latent (pivotal tuning, Roich et al. 2022) with the same loss; the tuned copy belongs to this
portrait only. The reconstruction's PSNR and its identity similarity (the evaluation's embedder,
harness.metrics.identity) are reported.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from harness.data.classes import NUM_CLASSES
from harness.errors import UserError
from harness.studio.engine import Studio

# (step done, steps in all, loss) after every optimisation step
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class InversionSettings:
    """How an inversion optimises (defaults measured on cpu-preset runs, docs/studio.md)."""

    steps: int = 200  # Adam steps on the latents
    lr: float = 0.05  # their learning rate
    identity_weight: float = 0.1  # lambda_id; 0: pixels only
    mask_weight: float = 0.5  # lambda_m, when a mask is given
    tune_steps: int = 0  # pivotal tuning steps of the generator afterwards; 0: none
    tune_lr: float = 3e-4  # its learning rate
    yaw: float = math.pi / 2  # the portrait's camera (radians; the frontal view by default)
    pitch: float = math.pi / 2


@dataclass
class Portrait:
    """An input portrait at the generator's resolution, and what was done to fit it."""

    image: torch.Tensor  # (3, R, R) in [-1, 1]
    mask: torch.Tensor | None  # (R, R) class ids
    notes: list[str] = field(default_factory=list)  # "resized from 640x480", ...


@dataclass
class Inversion:
    """The result of one inversion."""

    w: torch.Tensor  # (1, S, w_dim) the found latents
    generator: torch.nn.Module  # the generator to render them with (tuned copy or the run's)
    reconstruction: np.ndarray  # (R, R, 3) uint8 at the portrait's camera
    psnr: float  # dB, of the reconstruction against the portrait ([0, 1] pixel range)
    identity: float | None  # cosine similarity of their embeddings (None: no embedder)
    embedder: str | None  # its name
    losses: list[float]  # per step, latents then tuning
    seconds: float


def read_portrait(path: str | Path | None, resolution: int, mask_path: str | Path | None = None,
                  image: Image.Image | None = None) -> Portrait:
    """A portrait file (or an already opened image) as the generator's input: centre-cropped
    to a square, converted to RGB and resized, each step noted; a UserError for a file that
    is not an image or a mask with class ids outside 0..12."""
    notes: list[str] = []
    picture = image if image is not None else _open(path, "portrait")
    if picture.mode != "RGB":
        notes.append(f"converted from mode {picture.mode} to RGB")
        picture = picture.convert("RGB")
    picture = _square(picture, notes)
    if picture.size != (resolution, resolution):
        notes.append(f"resized from {picture.width}x{picture.height} to the generator's "
                     f"{resolution}x{resolution}")
        picture = picture.resize((resolution, resolution), Image.LANCZOS)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1)
    mask = None
    if mask_path is not None:
        mask_image = _square(_open(mask_path, "mask"), [])
        if mask_image.mode not in ("L", "P"):
            raise UserError(f"{mask_path}: a mask must be a one-channel image of class ids "
                            f"0..{NUM_CLASSES - 1} (mode L or P), not mode {mask_image.mode}")
        ids = np.asarray(mask_image.resize((resolution, resolution), Image.NEAREST))
        if ids.max() >= NUM_CLASSES:
            raise UserError(f"{mask_path}: class id {int(ids.max())} in the mask; ids are "
                            f"0..{NUM_CLASSES - 1} (harness.data.classes)")
        mask = torch.from_numpy(ids.astype(np.int64))
    return Portrait(pixels / 127.5 - 1, mask, notes)


def _open(path: str | Path | None, what: str) -> Image.Image:
    try:
        with Image.open(path) as opened:  # type: ignore[arg-type]
            opened.load()
            return opened.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path}: not an image ({type(error).__name__}); give a PNG or JPEG "
                        f"{what}") from None


def _square(picture: Image.Image, notes: list[str]) -> Image.Image:
    width, height = picture.size
    if width == height:
        return picture
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    notes.append(f"centre-cropped from {width}x{height} to {side}x{side}")
    return picture.crop((left, top, left + side, top + side))


class IdentityFeature(torch.nn.Module):
    """phi: differentiable unit identity embeddings of (N, 3, H, W) images in [-1, 1]."""

    def __init__(self, net: torch.nn.Module, name: str, crop: float | None = None):
        super().__init__()
        self.net, self.name, self.crop = net.eval().requires_grad_(False), name, crop

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop is None:  # synthface: the whole portrait, resized by the network
            return F.normalize(self.net(images)[1], dim=1)
        side = images.shape[-1]
        cut = max(1, round(side * self.crop))
        start = (side - cut) // 2
        faces = F.interpolate(images[..., start : start + cut, start : start + cut],
                              size=(112, 112), mode="bilinear", align_corners=False)
        # insightface feeds ArcFace RGB at (x - 127.5) / 127.5: our [-1, 1] images as they are
        return F.normalize(self.net(faces), dim=1)


def identity_feature(studio: Studio, arcface_onnx: str | Path | None) -> IdentityFeature | None:
    """phi for the run's data: ArcFace from `arcface_onnx` (onnx2torch), synthface-v2 on
    synthetic data, None on real data without an ArcFace file (pixels only)."""
    device = studio.device
    if arcface_onnx is not None:
        path = Path(arcface_onnx)
        if not path.is_file():
            raise UserError(f"--arcface-onnx {path}: no such .onnx file; give the path of an "
                            "insightface ArcFace recognition model (e.g. buffalo_l/w600k_r50.onnx)")
        try:
            from onnx2torch import convert
        except ImportError:
            raise UserError("an ArcFace identity loss needs onnx2torch: pip install -e "
                            "'.[studio]'") from None
        try:
            net = convert(_without_identity_weights(path))
        except Exception as error:  # noqa: BLE001 - any failure to read the model is the file's
            raise UserError(f"--arcface-onnx {path}: cannot convert it to torch "
                            f"({type(error).__name__}: {error})") from None
        return IdentityFeature(net.to(device), f"arcface:{path.name}",
                               studio.config.evaluate.id_crop)
    if studio.config.data.source == "synthetic":
        from harness.metrics.extractors.synthface import NAME, load_synthface

        return IdentityFeature(load_synthface().to(device), NAME)
    return None


def _without_identity_weights(path: Path) -> Any:
    """The ONNX model at `path` with weights that reach their operator through an Identity
    node (torch's exporter writes shared or folded weights so) stored under the Identity's
    output name instead: onnx2torch reads a convolution's weights from initializers only."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    for node in [node for node in graph.node
                 if node.op_type == "Identity" and node.input[0] in weights]:
        copied = onnx.TensorProto()
        copied.CopyFrom(weights[node.input[0]])
        copied.name = node.output[0]
        graph.initializer.append(copied)
        graph.node.remove(node)
    return model


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] images on the [0, 1] pixel range."""
    mse = float(((image.float() - target.float()) / 2).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _loss(out: dict[str, torch.Tensor], target: Portrait, phi: IdentityFeature | None,
          target_id: torch.Tensor | None, settings: InversionSettings) -> torch.Tensor:
    image = out["image"]
    loss = F.mse_loss(image, target.image[None])
    if phi is not None and settings.identity_weight > 0:
        loss = loss + settings.identity_weight * (1 - (phi(image) * target_id).sum(1).mean())
    if target.mask is not None and settings.mask_weight > 0:
        logits = out["mask"].clamp_min(1e-6).log()  # the mask is a softmax over classes
        loss = loss + settings.mask_weight * F.nll_loss(logits, target.mask[None])
    return loss


def invert(studio: Studio, target: Portrait, settings: InversionSettings = InversionSettings(),
           phi: IdentityFeature | None = None, progress: Progress | None = None,
           embedder: object | None = None) -> Inversion:
    """Fit latents (then optionally the generator) to `target`; see the module docstring.
    `embedder` (harness.metrics.identity.Embedder) measures the identity similarity shown."""
    started = time.perf_counter()
    device = studio.device
    target = Portrait(target.image.to(device),
                      None if target.mask is None else target.mask.to(device), target.notes)
    cameras = studio.cameras(settings.yaw, settings.pitch)
    target_id = None if phi is None else phi(target.image[None]).detach()
    generator = studio.generator
    w = studio.mean_latent().to(device).requires_grad_(True)
    losses: list[float] = []

    def fit(parameters: list[torch.Tensor], lr: float, steps: int) -> None:
        """Adam on `parameters` for `steps` steps of the loss at the current w and generator."""
        optimiser = torch.optim.Adam(parameters, lr=lr)
        total = settings.steps + settings.tune_steps
        for _ in range(steps):
            loss = _loss(generator(w, *cameras), target, phi, target_id, settings)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if progress is not None:
                progress(len(losses), total, losses[-1])

    with torch.enable_grad():
        fit([w], settings.lr, settings.steps)
        w = w.detach()
        if settings.tune_steps:  # pivotal tuning: a copy of the generator, at the found w
            generator = copy.deepcopy(generator).requires_grad_(True)
            fit(list(generator.parameters()), settings.tune_lr, settings.tune_steps)
            generator.requires_grad_(False).eval()
    with torch.no_grad():
        image = generator(w, *cameras)["image"][0]
    identity = None
    if embedder is not None:
        pair = embedder.embed(torch.stack([image, target.image]).cpu())  # type: ignore[attr-defined]
        identity = float((pair[0] * pair[1]).sum())
    from harness.visualize import to_uint8_image

    return Inversion(w, generator, to_uint8_image(image), psnr(image, target.image), identity,
                     getattr(embedder, "name", None), losses, time.perf_counter() - started)
