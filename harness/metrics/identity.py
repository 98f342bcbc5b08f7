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
  `insightface.model_zoo.get_model`, given 112x112 BGR uint8 faces, its expected input. How
  the face is cut out (`id_crop_method` in metrics.json):
  - `centre-crop F` (default, no detector): our cameras look at the head centre, so a fixed
    centre square of side F = `evaluate.id_crop` (fraction of the image side, default 0.8) is
    cropped and resized to 112x112 (area averaging; bilinear when enlarging).
  - `scrfd-5-landmarks:FILE` (with `--face-detector-onnx FILE`, an insightface SCRFD detector
    with keypoints, e.g. buffalo_l's det_10g.onnx): the whole portrait is first resized to the
    detector's square input, `evaluate.id_detector_size` pixels (default 640; a detector with a
    fixed input uses its own), bilinearly (area averaging when shrinking): cpu-preset portraits
    are 32x32, far below the faces SCRFD was trained on. `detect(max_num=1)` at score threshold
    `evaluate.id_detector_threshold` gives the five landmarks of the largest, most central face
    and `face_align.norm_crop` warps the resized portrait onto ArcFace's template (the
    insightface FaceAnalysis pipeline). A portrait without a detection falls back to the centre
    crop above; metrics.json counts them (`id_unaligned`, `id_aligned_fraction`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import ExperimentConfig
from harness.errors import UserError
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.extractors.synthface import load_synthface
from harness.metrics.generation import (
    MetricContext,
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
    crop_method: str | None  # how a face is cut out (metrics.json id_crop_method); None: whole

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float images in [-1, 1] -> (N, D) L2-normalised embeddings (CPU)."""
        ...


class SynthFaceEmbedder:
    """The shipped synthface network's identity embedding (128-d), `synthface-v2`."""

    name = SYNTHFACE
    crop_method = None  # the network resizes the whole portrait to 64x64 itself

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


def _onnx_providers(device: torch.device) -> list[str]:
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def _load_insightface(path: str | Path, option: str, wanted: str, task: str,
                      device: torch.device) -> object:
    """An insightface model from a local ONNX file (never downloads), checked to be a `task`
    model; every failure is a one-line UserError naming `option`."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".onnx":
        raise UserError(
            f"{option} {path}: no such .onnx file; give the path of an insightface {wanted} "
            "(copied to this machine by hand: nothing is downloaded)"
        )
    try:
        import onnxruntime  # noqa: F401 - the runtime insightface needs
        from insightface.model_zoo import get_model
    except ImportError as error:
        raise UserError(
            f"identity metric with ArcFace needs insightface and onnxruntime ({error}); "
            "pip install insightface onnxruntime"
        ) from None
    try:
        model = get_model(str(path.resolve()), providers=_onnx_providers(device), download=False)
    except Exception as error:  # noqa: BLE001 - any failure to load is the user's file
        raise UserError(
            f"{option} {path}: cannot load it with insightface ({type(error).__name__}: "
            f"{error}); give an {wanted}"
        ) from None
    if getattr(model, "taskname", None) != task:
        raise UserError(
            f"{option} {path}: insightface reads it as a "
            f"{getattr(model, 'taskname', 'unknown')} model, not a {task} model; give an {wanted}"
        )
    return model


def load_arcface(path: str | Path, device: torch.device) -> object:
    """An insightface ArcFace recognition model from a local ONNX file (never downloads)."""
    return _load_insightface(path, "--arcface-onnx", "ArcFace recognition model (e.g. "
                             "buffalo_l/w600k_r50.onnx)", "recognition", device)


def load_face_detector(path: str | Path, device: torch.device, size: int,
                       threshold: float) -> object:
    """An insightface SCRFD detector with 5 keypoints from a local ONNX file, prepared for
    square `size` x `size` input (unless its input size is fixed) and score `threshold`."""
    model = _load_insightface(path, "--face-detector-onnx", "SCRFD face detector with "
                              "landmarks (e.g. buffalo_l/det_10g.onnx)", "detection", device)
    if not getattr(model, "use_kps", False):
        raise UserError(
            f"--face-detector-onnx {path}: this detector has no landmark outputs (an SCRFD with "
            "6 or 10 outputs); give one with keypoints (9 or 15 outputs, e.g. det_10g.onnx)"
        )
    ctx_id = (device.index or 0) if device.type == "cuda" else -1  # -1: CPU
    model.prepare(ctx_id=ctx_id, input_size=(size, size), det_thresh=threshold)
    return model


def resize_square(images: torch.Tensor, size: int) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] -> (N, size, size, 3) BGR uint8, the whole image resized
    bilinearly (area averaging when shrinking)."""
    x = images.float()
    if x.shape[-1] >= size:
        x = F.interpolate(x, size=(size, size), mode="area")
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    rgb = to_uint8(x).permute(0, 2, 3, 1)  # (N, size, size, 3)
    return np.ascontiguousarray(rgb.flip(-1).cpu().numpy())  # RGB -> BGR


class LandmarkAligner:
    """SCRFD five-landmark detection and ArcFace alignment (see the module docstring)."""

    def __init__(self, path: str | Path, device: torch.device, size: int, threshold: float):
        self.detector = load_face_detector(path, device, size, threshold)
        # A detector with a fixed input ignores `size`; portraits go in at its own side.
        self.size = min(int(side) for side in self.detector.input_size)  # (W, H)
        self.method = f"scrfd-5-landmarks:{Path(path).name}"

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(5, 2) keypoints (x, y) of the chosen face in a BGR uint8 image, or None."""
        boxes, keypoints = self.detector.detect(image, max_num=1)
        if keypoints is None or len(boxes) == 0:
            return None
        return keypoints[0]

    def align(self, images: torch.Tensor) -> list[np.ndarray | None]:
        """(N, 3, H, W) in [-1, 1] -> per image a (112, 112, 3) BGR uint8 aligned face, or None
        where no face was found."""
        from insightface.utils.face_align import norm_crop

        faces: list[np.ndarray | None] = []
        for image in resize_square(images, self.size):
            points = self.landmarks(image)
            faces.append(None if points is None
                         else norm_crop(image, landmark=points, image_size=ARCFACE_SIZE))
        return faces


class ArcFaceEmbedder:
    """An insightface ArcFace ONNX model on landmark-aligned faces when a detector is given,
    else (and where it finds no face) on fixed centre crops; see the module docstring."""

    def __init__(self, path: str | Path, crop: float, device: torch.device,
                 aligner: LandmarkAligner | None = None):
        self.model = load_arcface(path, device)
        self.name = f"arcface:{Path(path).name}"
        self.crop = crop
        self.aligner = aligner
        self.crop_method = aligner.method if aligner else f"centre-crop {crop:g}"

    def faces(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 112, 112, 3) BGR uint8 faces and (N,) bool: aligned by landmarks."""
        crops = centre_crops(images, self.crop)
        aligned = np.zeros(len(crops), dtype=bool)
        if self.aligner is not None:
            for i, face in enumerate(self.aligner.align(images)):
                if face is not None:
                    crops[i], aligned[i] = face, True
        return crops, aligned

    def embed_faces(self, faces: np.ndarray) -> torch.Tensor:
        """(N, 112, 112, 3) BGR uint8 -> unit embeddings (N, 512 for the insightface models)."""
        features = self.model.get_feat(list(faces))  # (N, D) float32
        return F.normalize(torch.from_numpy(np.asarray(features, dtype=np.float32)), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings (N, 512 for the insightface models)."""
        return self.embed_faces(self.faces(images)[0])


def choose_embedder(config: ExperimentConfig, arcface_onnx: str | Path | None,
                    device: torch.device, face_detector_onnx: str | Path | None = None
                    ) -> Embedder:
    """ArcFace when a model path is given (aligned by landmarks when a detector path is given
    too); synthface-v2 on synthetic data; else a UserError."""
    cfg = config.evaluate
    if face_detector_onnx is not None and arcface_onnx is None:
        raise UserError(
            f"--face-detector-onnx {face_detector_onnx}: landmark alignment is for the ArcFace "
            "identity model; pass --arcface-onnx PATH too"
        )
    if arcface_onnx is not None:
        aligner = (LandmarkAligner(face_detector_onnx, device, cfg.id_detector_size,
                                   cfg.id_detector_threshold)
                   if face_detector_onnx is not None else None)
        return ArcFaceEmbedder(arcface_onnx, cfg.id_crop, device, aligner)
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


def embed_counting(embedder: Embedder, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Unit embeddings (N, D) and how many of the N faces were aligned by landmarks."""
    if isinstance(embedder, ArcFaceEmbedder):
        faces, aligned = embedder.faces(images)
        return embedder.embed_faces(faces), int(aligned.sum())
    return embedder.embed(images), 0


def evaluate_identity(
    generator: torch.nn.Module, embedder: Embedder, count: int, seed: int, batch_size: int
) -> MetricResult:
    """Mean and std over `count` latents of cos(embed(view 1), embed(view 2))."""
    device = device_of(generator)
    latent_stream, camera_stream = streams(seed, "id")
    view_1, view_2 = prior_camera_pairs(count, camera_stream, device)
    scores, aligned = [], 0
    for batch in batches(count, batch_size):
        w = latents(generator, batch.stop - batch.start, latent_stream)
        first, aligned_1 = embed_counting(embedder,
                                          render(generator, w, *take(view_1, batch))["image"])
        second, aligned_2 = embed_counting(embedder,
                                           render(generator, w, *take(view_2, batch))["image"])
        scores.append(cosine_pairs(first, second))
        aligned += aligned_1 + aligned_2
    similarity = torch.cat(scores)
    values = {"id_consistency": float(similarity.mean()),
              "id_consistency_std": float(similarity.std(unbiased=False)),
              "id_model": embedder.name}
    if embedder.crop_method is not None:
        values["id_crop_method"] = embedder.crop_method
    if getattr(embedder, "aligner", None) is not None:  # faces per image: 2 per latent
        values["id_unaligned"] = 2 * count - aligned
        values["id_aligned_fraction"] = aligned / (2 * count)
    return MetricResult(values, num_samples=count, images=2 * count)


def run(context: MetricContext) -> MetricResult:
    """Identity consistency of the context's generator (registry entry)."""
    return evaluate_identity(context.generator, context.embedder, context.count, context.seed,
                             context.config.evaluate.batch_size)


def lines(values: dict[str, Any]) -> list[str]:
    """The identity metric's lines of the CLI summary."""
    if values.get("id_consistency") is None:
        return []
    out = [f"ID consistency ({values['id_model']}) = {values['id_consistency']:.4f} "
           f"+- {values['id_consistency_std']:.4f}"]
    if values.get("id_crop_method"):
        aligned = values.get("id_aligned_fraction")
        out.append(f"  faces: {values['id_crop_method']}" + (
            "" if aligned is None else f", {aligned:.0%} aligned ({values['id_unaligned']} "
            "without a detected face: centre crop)"))
    return out
