"""Identity consistency: the insightface ArcFace path (offline, with a small ArcFace-architecture
ONNX model exported here with random weights), the centre crops, landmark alignment with an
insightface SCRFD detector (a tiny ONNX model with SCRFD's output layout, exported here), and
the synthface path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.cli import run_main
from harness.config import config_to_dict, load_config
from harness.errors import UserError
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.generation import frontal_cameras
from harness.metrics.identity import (
    ARCFACE_SIZE,
    ArcFaceEmbedder,
    LandmarkAligner,
    SynthFaceEmbedder,
    centre_crops,
    choose_embedder,
    evaluate_identity,
    resize_square,
)
from models.registry import get_model

pytest.importorskip("onnxruntime")  # dependencies of the project; the test says so if absent
pytest.importorskip("insightface")


class Block(nn.Module):
    """insightface's IBasicBlock: BN, conv, BN, PReLU, strided conv, BN, plus a shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            nn.PReLU(cout), nn.Conv2d(cout, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class TinyArcFace(nn.Module):
    """An iresnet-shaped ArcFace backbone, tiny: 112x112 RGB in [-1, 1] -> 512-d embedding."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.PReLU(8))
        self.blocks = nn.Sequential(Block(8, 8), Block(8, 16), Block(16, 16), Block(16, 16))
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.blocks(self.stem(x)))
        return self.features(self.fc(x.flatten(1)))


def export_tiny_arcface(path: Path) -> tuple[TinyArcFace, Path]:
    """A seeded TinyArcFace and its ONNX export at `path` (input 'input' N x 3 x 112 x 112)."""
    torch.manual_seed(0)
    model = TinyArcFace().eval()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still the one
        warnings.simplefilter("ignore", DeprecationWarning)  # that needs no onnxscript
        torch.onnx.export(model, torch.zeros(1, 3, ARCFACE_SIZE, ARCFACE_SIZE), str(path),
                          dynamo=False, input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=17)
    return model, path


@pytest.fixture(scope="module")
def arcface(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyArcFace, Path]:
    """The torch model and its ONNX export."""
    return export_tiny_arcface(tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx")


def test_arcface_onnx_embeds_like_the_torch_model(arcface: tuple[TinyArcFace, Path]) -> None:
    """insightface loads the file and embeds our crops exactly as the torch network does:
    BGR uint8 in, its (x - 127.5) / 127.5 normalisation, RGB order to the network."""
    model, path = arcface
    embedder = ArcFaceEmbedder(path, crop=0.75, device=torch.device("cpu"))
    assert type(embedder.model).__name__ == "ArcFaceONNX"
    assert embedder.name == "arcface:tiny_arcface.onnx"
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    embedding = embedder.embed(images)
    assert embedding.shape == (3, 512)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-5)
    rgb = torch.from_numpy(centre_crops(images, 0.75)[..., ::-1].copy())  # BGR -> RGB
    with torch.no_grad():
        reference = model(rgb.permute(0, 3, 1, 2).float() / 127.5 - 1)
    cosine = torch.nn.functional.cosine_similarity(embedding, reference, dim=1)
    assert torch.all(cosine > 1 - 1e-5)


def test_centre_crop_geometry_and_colour_order() -> None:
    image = torch.full((1, 3, 224, 224), -1.0)
    image[:, 0, 56:168, 56:168] = 1.0  # a red centre square of half the side
    crop = centre_crops(image, 0.5)  # exactly that square, 112 px: no resampling
    assert crop.shape == (1, ARCFACE_SIZE, ARCFACE_SIZE, 3) and crop.dtype == np.uint8
    assert (crop[..., 2] == 255).all() and (crop[..., :2] == 0).all()  # BGR: red is last
    wider = centre_crops(image, 1.0)
    assert wider[0, 0, 0, 2] == 0 and wider[0, 56, 56, 2] == 255


def test_missing_or_wrong_arcface_files_are_one_line_errors(
    tmp_path: Path, arcface: tuple[TinyArcFace, Path],
) -> None:
    config = load_config(None, "smoke")
    cpu = torch.device("cpu")
    with pytest.raises(UserError) as error:
        choose_embedder(config, tmp_path / "w600k_r50.onnx", cpu)
    assert "\n" not in str(error.value) and "--arcface-onnx" in str(error.value)
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    with pytest.raises(UserError, match="cannot load it with insightface"):
        choose_embedder(config, not_onnx, cpu)
    real = load_config(None, "smoke", ["data.source=celebamask-hq", "data.path=/nowhere"])
    with pytest.raises(UserError, match="--arcface-onnx PATH"):
        choose_embedder(real, None, cpu)
    assert choose_embedder(real, arcface[1], cpu).name.startswith("arcface:")
    assert choose_embedder(config, None, cpu).name == SYNTHFACE


def test_identity_consistency_of_a_generator(arcface: tuple[TinyArcFace, Path]) -> None:
    """Values are cosines; a camera-blind generator (every pose the same image) scores 1."""
    config = load_config(None, "smoke")
    torch.manual_seed(0)
    g = get_model("3dssgan").build_generator(config.model).eval()
    result = evaluate_identity(g, SynthFaceEmbedder(torch.device("cpu")), 6, seed=0,
                               batch_size=4)
    assert -1 <= result.values["id_consistency"] <= 1
    assert result.values["id_consistency_std"] >= 0 and result.images == 12
    assert result.values["id_model"] == SYNTHFACE

    class CameraBlind(type(g)):
        def forward(self, w, cam2world, intrinsics, **kwargs):  # noqa: ANN001, ANN003, ANN201
            return super().forward(w, *frontal_cameras(len(w), w.device), **kwargs)

    blind = CameraBlind(g.config)
    blind.load_state_dict(g.state_dict())
    blind.eval()
    arc = ArcFaceEmbedder(arcface[1], crop=0.8, device=torch.device("cpu"))
    same = evaluate_identity(blind, arc, 4, seed=0, batch_size=4)
    assert same.values["id_consistency"] == pytest.approx(1.0, abs=1e-5)
    assert same.values["id_model"] == "arcface:tiny_arcface.onnx"


# The tiny detector's five keypoints (x, y) relative to the top-left corner of the 32x32 cell it
# fires on, in units of the cell (stride 32): eyes, nose, mouth corners.
KEYPOINTS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
DETECTOR_SIZE = 128  # pixels, the square input the tests prepare the detector for


class TinySCRFD(nn.Module):
    """SCRFD's output layout with keypoints (9 outputs: scores (A, 1), box distances (A, 4) and
    keypoint distances (A, 10) at strides 8, 16, 32, two anchors per cell, A = 2 H W / s^2,
    all in units of the stride), which insightface's router and decoder read by count and
    shape. It finds a face in each 32x32 cell that is pure red (score = mean(R - G - B) - 2 on
    the (x - 127.5) / 128 input, about 0.99 there and 0 on ordinary images): the box is the
    cell, the keypoints are KEYPOINTS in it. Strides 8 and 16 never fire."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # x: (1, 3, H, W) RGB
        red = (x[:, 0] - x[:, 1] - x[:, 2])[:, None]  # (1, 1, H, W)
        scores, boxes, keypoints = [], [], []
        for stride in (8, 16, 32):
            cells = F.avg_pool2d(red, stride).reshape(-1, 1)  # (H W / s^2, 1), row-major
            cells = torch.cat([cells, cells], 1).reshape(-1, 1)  # two anchors per cell
            scores.append((cells - 2).clamp(0, 1) if stride == 32 else cells * 0)
            boxes.append(cells * 0 + torch.tensor([0.0, 0.0, 1.0, 1.0]))
            keypoints.append(cells * 0 + torch.from_numpy(KEYPOINTS.ravel()).float())
        return (*scores, *boxes, *keypoints)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TinySCRFD exported with a dynamic input size, like buffalo_l's det_10g.onnx."""
    path = tmp_path_factory.mktemp("scrfd") / "tiny_scrfd.onnx"
    names = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in (8, 16, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the constant offsets
        torch.onnx.export(TinySCRFD(), torch.zeros(1, 3, DETECTOR_SIZE, DETECTOR_SIZE),
                          str(path), dynamo=False, input_names=["input.1"], output_names=names,
                          dynamic_axes={"input.1": {2: "height", 3: "width"},
                                        **{name: {0: "anchors"} for name in names}},
                          opset_version=17)
    return path


def _portraits(side: int = 32) -> torch.Tensor:
    """(3, 3, side, side) in [-1, 1]: grey noise; image 0 has a pure red block over the
    detector's stride-32 cell (row 1, column 2) once resized to DETECTOR_SIZE, image 1 over cell
    (2, 0), image 2 none."""
    images = 0.1 * torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(2))
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
    q = side // 4  # one cell of the 4 x 4 grid
    images[0, :, q : 2 * q, 2 * q : 3 * q] = red
    images[1, :, 2 * q : 3 * q, 0:q] = red
    return images.clamp(-1, 1)


def test_faces_are_aligned_by_the_detected_landmarks(
    arcface: tuple[TinyArcFace, Path], detector: Path,
) -> None:
    """insightface loads the tiny file as SCRFD; found faces are norm_crop of the portrait
    resized to the detector's input at the known landmarks; the rest are centre crops."""
    from insightface.utils.face_align import norm_crop

    cpu = torch.device("cpu")
    aligner = LandmarkAligner(detector, cpu, DETECTOR_SIZE, threshold=0.5)
    assert type(aligner.detector).__name__ == "SCRFD" and aligner.size == DETECTOR_SIZE
    embedder = ArcFaceEmbedder(arcface[1], crop=0.8, device=cpu, aligner=aligner)
    assert embedder.crop_method == "scrfd-5-landmarks:tiny_scrfd.onnx"
    images = _portraits()
    faces, aligned = embedder.faces(images)
    assert aligned.tolist() == [True, True, False] and faces.shape == (3, 112, 112, 3)
    resized = resize_square(images, DETECTOR_SIZE)  # (3, 128, 128, 3) BGR uint8
    assert resized[0, 40:56, 72:88, 2].min() == 255 and resized[0, 40:56, 72:88, :2].max() == 0
    for i, (row, column) in enumerate([(1, 2), (2, 0)]):
        landmarks = (np.array([column, row]) + KEYPOINTS) * 32  # (5, 2) pixels (x, y)
        np.testing.assert_array_equal(
            faces[i], norm_crop(resized[i], landmark=landmarks.astype(np.float32),
                                image_size=112))
    np.testing.assert_array_equal(faces[2], centre_crops(images[2:], 0.8)[0])
    expected = embedder.embed_faces(faces)
    assert torch.allclose(embedder.embed(images), expected)
    # Without a detector every face is the centre crop.
    plain = ArcFaceEmbedder(arcface[1], crop=0.8, device=cpu)
    assert plain.crop_method == "centre-crop 0.8"
    np.testing.assert_array_equal(plain.faces(images)[0], centre_crops(images, 0.8))


def test_images_without_a_face_fall_back_and_are_counted(
    arcface: tuple[TinyArcFace, Path], detector: Path,
) -> None:
    """Per render batch the first portrait carries a red face: 2 of 8 images (4 latents, two
    views each) are aligned, 6 fall back to the centre crop."""
    config = load_config(None, "smoke", [f"evaluate.id_detector_size={DETECTOR_SIZE}"])
    torch.manual_seed(0)
    g = get_model("3dssgan").build_generator(config.model).eval()

    class RedFace(type(g)):
        def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            out = dict(super().forward(*args, **kwargs))
            image = out["image"].clone()  # (B, 3, H, W)
            q = image.shape[-1] // 4
            image[0, :, q : 2 * q, 2 * q : 3 * q] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
            out["image"] = image
            return out

    red = RedFace(g.config)
    red.load_state_dict(g.state_dict())
    red.eval()
    embedder = choose_embedder(config, arcface[1], torch.device("cpu"), detector)
    result = evaluate_identity(red, embedder, 4, seed=0, batch_size=4)
    assert result.values["id_crop_method"] == "scrfd-5-landmarks:tiny_scrfd.onnx"
    assert result.values["id_unaligned"] == 6
    assert result.values["id_aligned_fraction"] == pytest.approx(0.25)
    # Where nothing is found, the metric is exactly the centre-crop one.
    none_found = evaluate_identity(g, embedder, 4, seed=0, batch_size=4)
    centre = evaluate_identity(g, choose_embedder(config, arcface[1], torch.device("cpu")), 4,
                               seed=0, batch_size=4)
    assert none_found.values["id_unaligned"] == 8 and none_found.values["id_aligned_fraction"] == 0
    assert none_found.values["id_consistency"] == centre.values["id_consistency"]
    assert centre.values["id_crop_method"] == "centre-crop 0.8"
    assert "id_unaligned" not in centre.values


def _run_dir(root: Path) -> Path:
    """A run directory holding an untrained smoke-preset 3D-SSGAN snapshot (no training)."""
    config = load_config(None, "smoke", [f"data.cache_dir={root / 'cache'}"])
    torch.manual_seed(0)
    g = get_model("3dssgan").build_generator(config.model)
    (root / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"config": config_to_dict(config), "generator_ema": g.state_dict(),
                "iteration": 0}, root / "run" / "checkpoints" / "network-snapshot-00000000.pt")
    return root / "run"


def test_face_detector_on_the_command_line(
    tmp_path: Path, arcface: tuple[TinyArcFace, Path], detector: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad --face-detector-onnx is one error line and exit code 2; a good one runs and
    metrics.json says how the faces were cut out."""
    from harness.evaluate import build_parser, main

    run = _run_dir(tmp_path)
    base = [str(run), "--metrics", "id", "--num-samples", "2", "--no-wandb", "--device", "cpu",
            "--arcface-onnx", str(arcface[1])]
    bad = [(tmp_path / "det_10g.onnx", "no such .onnx file"),
           (arcface[1], "reads it as a recognition model, not a detection model")]
    for path, message in bad:
        code = run_main(main, build_parser(), [*base, "--face-detector-onnx", str(path)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
        assert "--face-detector-onnx" in err and message in err, err
    code = run_main(main, build_parser(), [str(run), "--metrics", "id", "--face-detector-onnx",
                                           str(detector)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pass --arcface-onnx PATH too" in err.splitlines()[-1]
    assert not (run / "metrics.json").exists()

    code = run_main(main, build_parser(), [*base, "--face-detector-onnx", str(detector), "--set",
                                           f"evaluate.id_detector_size={DETECTOR_SIZE}"])
    out = capsys.readouterr().out
    assert code == 0 and "faces: scrfd-5-landmarks:tiny_scrfd.onnx" in out
    written = json.loads((run / "metrics.json").read_text())
    assert written["id_crop_method"] == "scrfd-5-landmarks:tiny_scrfd.onnx"
    assert written["id_unaligned"] == 4 and written["id_aligned_fraction"] == 0
    assert written["id_model"] == "arcface:tiny_arcface.onnx"
