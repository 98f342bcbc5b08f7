"""Identity consistency: the insightface ArcFace path (offline, with a small ArcFace-architecture
ONNX model exported here with random weights), the centre crops, and the synthface path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.config import load_config
from harness.errors import UserError
from harness.metrics.extractors.synthface import NAME as SYNTHFACE
from harness.metrics.generation import frontal_cameras
from harness.metrics.identity import (
    ARCFACE_SIZE,
    ArcFaceEmbedder,
    SynthFaceEmbedder,
    centre_crops,
    choose_embedder,
    evaluate_identity,
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


@pytest.fixture(scope="module")
def arcface(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyArcFace, Path]:
    """The torch model and its ONNX export (input 'input' N x 3 x 112 x 112)."""
    torch.manual_seed(0)
    model = TinyArcFace().eval()
    path = tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still the one
        warnings.simplefilter("ignore", DeprecationWarning)  # that needs no onnxscript
        torch.onnx.export(model, torch.zeros(1, 3, ARCFACE_SIZE, ARCFACE_SIZE), str(path),
                          dynamo=False, input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=17)
    return model, path


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
