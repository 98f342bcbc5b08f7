"""The embedded synthetic dataset: determinism, classes, 3D consistency, cache, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.classes import NUM_CLASSES
from harness.data.prepared import PreparedDataset, read_meta
from harness.data.synthetic import class_frequencies, ensure_synthetic, generate_synthetic
from models.camera import project, unproject_depth

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "d"
    generate_synthetic(out, identities=20, views=3, resolution=32, seed=7)
    return out


def test_arrays_and_split(small: Path) -> None:
    meta = read_meta(small)
    assert meta["num_samples"] == 60 and meta["has_depth"]
    images = np.load(small / "images.npy")
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.uint8
    identity = np.load(small / "identity.npy")
    assert (identity == np.repeat(np.arange(20), 3)).all()
    split = np.load(small / "split.npy")
    assert (split[identity >= 18] == 1).all() and (split[identity < 18] == 0).all()
    assert np.load(small / "masks.npy").max() < NUM_CLASSES


def test_same_seed_same_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "again", identities=20, views=3, resolution=32, seed=7)
    generate_synthetic(tmp_path / "other", identities=20, views=3, resolution=32, seed=8)
    for name in ("images", "masks", "depth", "cameras"):
        assert np.array_equal(np.load(small / f"{name}.npy"),
                              np.load(tmp_path / "again" / f"{name}.npy"))
    assert not np.array_equal(np.load(small / "images.npy"),
                              np.load(tmp_path / "other" / "images.npy"))


def test_every_class_occurs_in_a_thousand_samples(tmp_path: Path) -> None:
    out = tmp_path / "many"
    generate_synthetic(out, identities=250, views=4, resolution=32, seed=0)
    frequencies = class_frequencies(np.load(out / "masks.npy"))
    assert all(f["samples"] > 0 for f in frequencies.values()), frequencies
    assert read_meta(out)["class_frequencies"] == frequencies


def test_views_of_an_identity_are_3d_consistent(small: Path) -> None:
    """Reproject view A's surface into view B with the depth maps: the labels agree."""
    data = PreparedDataset(small, split="all")
    agree, total = 0, 0
    for identity in range(6):
        a, b = data[3 * identity], data[3 * identity + 1]
        points = unproject_depth(a["depth"][None], a["cam2world"][None], a["intrinsics"])
        uv, z = project(points, b["cam2world"][None], b["intrinsics"])
        pixel = (uv[0] * 32).floor().long()  # (M, 2)
        inside = ((pixel >= 0) & (pixel < 32)).all(-1)
        col, row = pixel[:, 0].clamp(0, 31), pixel[:, 1].clamp(0, 31)
        visible = inside & ((b["depth"][row, col] - z[0]).abs() < 0.03)  # not occluded in B
        labels_a = a["mask"].flatten()
        # interior pixels: a 3x3 neighbourhood of one class (boundaries alias at 32 px)
        padded = torch.nn.functional.pad(a["mask"][None, None].float(), (1, 1, 1, 1),
                                         mode="replicate")
        patches = torch.nn.functional.unfold(padded, 3)[0]  # (9, R*R)
        interior = (patches == patches[4:5]).all(0)
        keep = visible & (labels_a != 0) & interior
        agree += int((labels_a[keep] == b["mask"][row[keep], col[keep]]).sum())
        total += int(keep.sum())
    assert total > 400
    assert agree / total > 0.95


def test_portrait_lies_in_the_unit_ball_and_backdrop_behind(small: Path) -> None:
    """Every labelled surface is inside the unit ball (models.camera's promise); the backdrop
    is beyond it, so each pixel has a finite depth."""
    data = PreparedDataset(small, split="all")
    for index in range(0, len(data), 7):
        sample = data[index]
        points = unproject_depth(sample["depth"][None], sample["cam2world"][None],
                                 sample["intrinsics"])[0]
        radius = points.norm(dim=-1)  # (R*R,)
        person = sample["mask"].flatten() != 0
        assert person.any() and torch.isfinite(radius).all()
        assert radius[person].max() < 1.01  # float16 depth: ~0.004 head units at depth 4
        assert radius[~person].min() > 2.0


def test_flip_mirrors_image_mask_and_camera(small: Path) -> None:
    plain = PreparedDataset(small, split="all")
    flipped = PreparedDataset(small, split="all", flip=True)
    assert len(flipped) == 2 * len(plain)
    a, b = plain[4], flipped[len(plain) + 4]
    assert torch.equal(b["image"], a["image"].flip(-1)) and torch.equal(b["mask"],
                                                                        a["mask"].flip(-1))
    torch.testing.assert_close(b["angles"][0], torch.pi - a["angles"][0])
    points = unproject_depth(b["depth"][None], b["cam2world"][None], b["intrinsics"])
    mirrored = unproject_depth(a["depth"][None], a["cam2world"][None], a["intrinsics"])
    mirrored = mirrored.view(32, 32, 3).flip(1).reshape(1, -1, 3) * torch.tensor([-1, 1, 1])
    torch.testing.assert_close(points, mirrored, rtol=1e-3, atol=2e-3)


def test_ensure_synthetic_reuses_the_cache(tmp_path: Path) -> None:
    first = ensure_synthetic(identities=4, views=2, resolution=32, seed=1, cache_dir=tmp_path)
    stamp = (first / "images.npy").stat().st_mtime_ns
    again = ensure_synthetic(identities=4, views=2, resolution=32, seed=1, cache_dir=tmp_path)
    assert again == first and (again / "images.npy").stat().st_mtime_ns == stamp


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.data", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_cli_generates_and_previews(tmp_path: Path) -> None:
    result = _cli("synthetic", "--out", str(tmp_path / "d"), "--identities", "3", "--views", "2",
                  "--resolution", "32", "--seed", "0")
    assert result.returncode == 0, result.stderr
    result = _cli("preview", str(tmp_path / "d"), "--out", str(tmp_path / "grid.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "expected"), [
    (["synthetic", "--out", "X", "--resolution", "48"], "--resolution 48"),
    (["preview", "NOPE", "--out", "g.png"], "not a prepared dataset"),
    (["celebamask-hq", "--raw", "NOPE", "--out", "X", "--resolution", "64"], "NOPE"),
])
def test_cli_bad_input(tmp_path: Path, args: list[str], expected: str) -> None:
    args = [str(tmp_path / a) if a in ("X", "NOPE") else a for a in args]
    result = _cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "X").exists()
