"""CelebAMask-HQ preparation on a tiny fabricated tree in the published layout."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import celebamask
from harness.data.celebamask import prepare_celebamask
from harness.data.prepared import PreparedDataset, PreparedWriter
from harness.errors import UserError
from models.camera import camera_position, intrinsics, look_at_origin

ROOT = Path(__file__).resolve().parents[1]
RES = 64  # output resolution of most tests; mask rectangles are given on this grid

# Written out from DESIGN.md's table, independently of harness.data.classes:
# part -> class id, in painting order (later parts overwrite earlier ones).
PART_CLASS = {
    "skin": 1,
    "eye_g": 10,
    "l_eye": 2,
    "r_eye": 2,
    "l_brow": 3,
    "r_brow": 3,
    "mouth": 4,
    "u_lip": 4,
    "l_lip": 4,
    "nose": 5,
    "hair": 7,
    "l_ear": 6,
    "r_ear": 6,
    "neck": 8,
    "neck_l": 8,
    "cloth": 9,
    "hat": 11,
    "ear_r": 12,
}

# index -> image size, image colour ("checker" = 1-pixel black/white checkerboard, an int =
# grayscale JPEG), mask mode and value, and part -> (mask size, (top, left, bottom, right) in
# cells of the RES grid). Parts an image lacks have no file.
SAMPLES = {
    0: {
        "size": 1024,
        "colour": "checker",
        "mode": ("RGB", (255, 255, 255)),
        "parts": {
            "skin": (512, (8, 8, 56, 56)),
            "hair": (512, (0, 0, 24, 64)),  # over the skin
            "l_ear": (512, (16, 4, 40, 12)),  # over hair and skin
            "ear_r": (512, (36, 4, 40, 8)),  # over the ear
            "eye_g": (512, (24, 16, 32, 48)),
            "l_eye": (512, (26, 18, 30, 28)),  # over the glasses
            "hat": (512, (0, 8, 8, 56)),  # over the hair
            "neck": (512, (50, 24, 64, 40)),
            "cloth": (512, (58, 0, 64, 64)),  # over the neck
        },
    },
    1: {
        "size": 256,
        "colour": (200, 30, 60),
        "mode": ("L", 255),
        "parts": {"skin": (128, (10, 10, 50, 50)), "cloth": (128, (54, 0, 64, 64))},
    },
    2: {
        "size": 200,
        "colour": 90,
        "mode": ("L", 255),
        "parts": {
            "skin": (512, (10, 10, 54, 54)),
            "mouth": (512, (40, 24, 48, 40)),
            "u_lip": (512, (38, 22, 42, 42)),
            "nose": (512, (28, 28, 42, 36)),  # over the upper lip
        },
    },
    5: {
        "size": 1024,
        "colour": (20, 120, 220),
        "mode": ("L", 1),
        "parts": {"skin": (192, (6, 6, 60, 60)), "r_brow": (192, (20, 34, 24, 50))},
    },
    10: {
        "size": 256,
        "colour": (10, 200, 10),
        "mode": ("L", 255),
        "parts": {
            "skin": (512, (8, 8, 56, 56)),
            "hair": (128, (0, 0, 20, 64)),  # smaller mask, painted over a larger one
            "nose": (64, (24, 28, 40, 36)),
        },
    },
    2001: {
        "size": 256,
        "colour": (128, 64, 32),
        "mode": ("L", 255),
        "parts": {
            "skin": (128, (4, 4, 44, 60)),
            "neck_l": (128, (40, 20, 64, 44)),
            "neck": (128, (44, 16, 64, 48)),
        },
    },
}
POSES = {0: (10.0, -5.0, 1.5), 1: (-20.0, 8.0, 0.0), 2: (0.0, 0.0, 0.0), 5: (3.0, 2.0, -1.0),
         10: (-1.0, 1.0, 0.5), 2001: (45.0, -10.0, 2.0)}  # fmt: skip
VAL_START = 10
INDICES = sorted(SAMPLES)


def _mask_path(raw: Path, index: int, part: str) -> Path:
    return raw / "CelebAMask-HQ-mask-anno" / str(index // 2000) / f"{index:05d}_{part}.png"


def _write_image(path: Path, size: int, colour: object) -> None:
    if colour == "checker":
        checker = ((np.indices((size, size)).sum(axis=0) % 2) * 255).astype(np.uint8)
        image = Image.fromarray(checker).convert("RGB")
    elif isinstance(colour, int):
        image = Image.new("L", (size, size), colour)
    else:
        image = Image.new("RGB", (size, size), colour)
    image.save(path, quality=100, subsampling=0)


def make_raw(root: Path, poses: bool = True) -> Path:
    """A CelebAMask-HQ tree in the published layout holding SAMPLES."""
    raw = root / "raw"
    (raw / "CelebA-HQ-img").mkdir(parents=True)
    for index, spec in SAMPLES.items():
        _write_image(raw / "CelebA-HQ-img" / f"{index}.jpg", spec["size"], spec["colour"])
        mode, value = spec["mode"]
        for part, (size, (top, left, bottom, right)) in spec["parts"].items():
            scale = size // RES
            mask = Image.new(mode, (size, size), 0)
            mask.paste(value, (left * scale, top * scale, right * scale, bottom * scale))
            path = _mask_path(raw, index, part)
            path.parent.mkdir(parents=True, exist_ok=True)
            mask.save(path)
    (raw / "CelebA-HQ-img" / "notes.txt").write_text("not an image")
    if poses:
        lines = ["30000", "Yaw Pitch Raw"]
        lines += [f"{i}.jpg {y} {p} {r}" for i, (y, p, r) in POSES.items()]
        (raw / "CelebAMask-HQ-pose-anno.txt").write_text("\n".join(lines) + "\n")
    return raw


def expected_labels(index: int) -> np.ndarray:
    """The merged label map on the RES grid, painted with plain loops."""
    labels = np.zeros((RES, RES), dtype=np.uint8)
    parts = SAMPLES[index]["parts"]
    for part, class_id in PART_CLASS.items():
        if part in parts:
            top, left, bottom, right = parts[part][1]
            for y in range(top, bottom):
                for x in range(left, right):
                    labels[y, x] = class_id
    return labels


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw(tmp_path)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    names = ("images", "masks", "angles", "cameras", "intrinsics", "identity", "split")
    return {name: np.load(path / f"{name}.npy") for name in names}


def test_labels_images_split_and_reading(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    meta = prepare_celebamask(raw, out, RES, val_start=VAL_START)
    assert meta["num_samples"] == len(SAMPLES) and not meta["has_depth"]
    assert (meta["num_train"], meta["num_val"]) == (4, 2)
    assert meta["params"]["raw_dir"] == str(raw.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # nothing left behind
    arrays = _arrays(out)
    assert arrays["images"].shape == (len(SAMPLES), RES, RES, 3)
    for position, index in enumerate(INDICES):  # numeric order: 0 1 2 5 10 2001
        np.testing.assert_array_equal(arrays["masks"][position], expected_labels(index))
        assert arrays["split"][position] == (index >= VAL_START)
    np.testing.assert_array_equal(arrays["identity"], -1)

    images = arrays["images"].astype(int)
    checker = images[INDICES.index(0)]  # 1024 -> 64 must average the 1-pixel checkerboard
    assert abs(checker.mean() - 127.5) < 3 and np.abs(checker - 127.5).max() < 20
    gray = images[INDICES.index(2)]  # grayscale JPEG, 200 -> 64
    assert np.abs(gray - 90).max() <= 2
    for index in (1, 5, 10, 2001):
        assert np.abs(images[INDICES.index(index)] - SAMPLES[index]["colour"]).max() <= 6

    dataset = PreparedDataset(out, split="all")
    assert len(dataset) == len(SAMPLES)
    item = dataset[INDICES.index(2001)]
    assert item["image"].shape == (3, RES, RES) and item["identity"] == -1
    np.testing.assert_array_equal(item["mask"].numpy(), expected_labels(2001))
    assert len(PreparedDataset(out, split="val")) == 2


def test_nearest_resize_keeps_class_ids(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "CelebA-HQ-img").mkdir(parents=True)
    Image.new("RGB", (300, 300), (1, 2, 3)).save(raw / "CelebA-HQ-img" / "7.jpg")
    yy, xx = np.mgrid[:512, :512]
    circles = {"skin": (256, 256, 180), "hair": (150, 256, 150), "l_ear": (260, 90, 60)}
    for part, (cy, cx, radius) in circles.items():
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2).astype(np.uint8) * 255
        path = _mask_path(raw, 7, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(disc).save(path)
    prepare_celebamask(raw, tmp_path / "out", 32)
    mask = np.load(tmp_path / "out" / "masks.npy")[0]
    assert set(np.unique(mask)) == {0, 1, 7, 6}


def test_cameras_from_pose_file(raw: Path, tmp_path: Path) -> None:
    prepare_celebamask(raw, tmp_path / "out", RES, val_start=VAL_START)
    arrays = _arrays(tmp_path / "out")
    yaw, pitch = arrays["angles"][INDICES.index(0)]  # pose line `0.jpg 10.0 -5.0 1.5`
    assert yaw == pytest.approx(math.pi / 2 - math.radians(10.0), abs=1e-6)
    assert pitch == pytest.approx(math.pi / 2 + math.radians(-5.0), abs=1e-6)
    angles = torch.from_numpy(arrays["angles"]).double()
    # Head turned to the image's left (positive Hopenet yaw): the camera sits at the viewer's
    # right, +x; head tilted down (negative pitch): the camera sits above the head, +y.
    x, y, _ = camera_position(angles[INDICES.index(0)])
    assert x > 0 and y > 0
    np.testing.assert_allclose(arrays["cameras"], look_at_origin(angles).numpy(), atol=1e-6)
    np.testing.assert_allclose(arrays["intrinsics"][3], intrinsics().numpy())


def test_frontal_cameras_without_pose_file(tmp_path: Path) -> None:
    raw = make_raw(tmp_path, poses=False)
    meta = prepare_celebamask(raw, tmp_path / "out", RES)
    assert meta["poses"] == "none" and meta["num_val"] == 0  # default val_start = 28000
    angles = np.load(tmp_path / "out" / "angles.npy")
    np.testing.assert_allclose(angles, np.full((len(SAMPLES), 2), math.pi / 2), atol=1e-7)


def test_resume_after_interruption(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = prepare_celebamask(raw, tmp_path / "reference", RES, val_start=VAL_START)
    monkeypatch.setattr(celebamask, "BLOCK_SIZE", 2)
    write = PreparedWriter.write

    def write_then_stop(self: PreparedWriter, start: int, **arrays: np.ndarray) -> None:
        write(self, start, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(PreparedWriter, "write", write_then_stop)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        prepare_celebamask(raw, tmp_path / "out", RES, val_start=VAL_START)
    assert not (tmp_path / "out").exists()
    partial = tmp_path / "out.staged.partial"
    assert partial.is_dir()  # kept, and the warning says what it is for
    assert f"kept for resuming: {partial} (run the same command again" in caplog.text
    monkeypatch.setattr(PreparedWriter, "write", write)

    loaded = []
    load_sample = celebamask._load_sample

    def counting_load(sample: celebamask._Sample, resolution: int) -> tuple[np.ndarray, ...]:
        loaded.append(sample.index)
        return load_sample(sample, resolution)

    monkeypatch.setattr(celebamask, "_load_sample", counting_load)
    meta = prepare_celebamask(raw, tmp_path / "out", RES, val_start=VAL_START)
    assert sorted(loaded) == INDICES[2:]  # the first block was not decoded again
    assert meta["content_hash"] == reference["content_hash"]
    for name, values in _arrays(tmp_path / "reference").items():
        np.testing.assert_array_equal(_arrays(tmp_path / "out")[name], values)

    loaded.clear()  # same job again: a no-op that returns the published metadata
    assert prepare_celebamask(raw, tmp_path / "out", RES, val_start=VAL_START) == meta
    assert loaded == []


def test_missing_folders(raw: Path, tmp_path: Path) -> None:
    (raw / "CelebAMask-HQ-mask-anno").rename(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="CelebAMask-HQ-mask-anno not found") as error:
        prepare_celebamask(raw, tmp_path / "out", RES)
    assert str(raw / "CelebAMask-HQ-mask-anno") in str(error.value)
    assert "CelebA-HQ-img/{i}.jpg" in str(error.value)
    with pytest.raises(UserError, match="CelebA-HQ-img not found"):
        prepare_celebamask(tmp_path / "nowhere", tmp_path / "out", RES)


@pytest.mark.parametrize("resolution", [16, 48, 2048])
def test_bad_resolution(raw: Path, tmp_path: Path, resolution: int) -> None:
    with pytest.raises(UserError, match="power of two between 32 and 1024"):
        prepare_celebamask(raw, tmp_path / "out", resolution)


def test_bad_files_error_then_skip(
    raw: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt_mask = _mask_path(raw, 1, "skin")
    corrupt_mask.write_bytes(b"not a png")
    truncated = raw / "CelebA-HQ-img" / "10.jpg"
    truncated.write_bytes(truncated.read_bytes()[:400])
    not_square = raw / "CelebA-HQ-img" / "5.jpg"
    Image.new("RGB", (300, 200)).save(not_square)
    out = tmp_path / "out"

    with pytest.raises(UserError, match="--skip-bad") as error:
        prepare_celebamask(raw, out, RES, val_start=VAL_START)
    assert str(corrupt_mask) in str(error.value) and "cannot be decoded" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no staging left behind

    with caplog.at_level(logging.WARNING):
        meta = prepare_celebamask(raw, out, RES, val_start=VAL_START, skip_bad=True)
    assert "left out 3 bad sample(s)" in caplog.text
    assert meta["num_samples"] == 3 and meta["num_skipped"] == 3
    lines = (out / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(corrupt_mask), str(not_square),
                                                       str(truncated)]  # fmt: skip
    assert "300x200" in lines[1]
    kept = [0, 2, 2001]
    dataset = PreparedDataset(out, split="all")
    assert len(dataset) == 3
    for position, index in enumerate(kept):
        np.testing.assert_array_equal(dataset[position]["mask"].numpy(), expected_labels(index))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def _data_cli(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.data", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_bad_image_is_one_line_and_quiet_works_anywhere(raw: Path, tmp_path: Path) -> None:
    """A corrupt image: exit code 2 and nothing written; `--quiet` after the subcommand leaves
    only the error line (no log line, no progress bar), which are there without it."""
    (raw / "CelebA-HQ-img" / "2.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    args = ("celebamask-hq", "--raw", raw, "--out", out, "--resolution", RES)
    loud = _data_cli(*args, "--val-start", VAL_START)
    assert loud.returncode == 2 and "preparing 6 CelebAMask-HQ images" in loud.stderr
    assert "img/s]" in loud.stderr  # the progress bar
    quiet = _data_cli(*args, "--quiet", "--val-start", VAL_START)
    assert quiet.returncode == 2 and quiet.stdout == ""
    [line] = quiet.stderr.splitlines()
    assert line.startswith(f"error: {raw / 'CelebA-HQ-img' / '2.jpg'} cannot be decoded")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    skipped = _data_cli(*args, "--skip-bad", "--quiet")
    assert skipped.returncode == 0 and skipped.stderr.splitlines() == [
        f"left out 1 bad sample(s); they are listed in {out / 'skipped.txt'}"]
    assert skipped.stdout.startswith(f"{out}: 5 samples at {RES}px")


def test_bad_pose_file(raw: Path, tmp_path: Path) -> None:
    pose_file = raw / "CelebAMask-HQ-pose-anno.txt"
    pose_file.write_text(pose_file.read_text().replace("1.jpg -20.0", "1.jpg minus20"))
    with pytest.raises(UserError, match=r"pose-anno.txt:4: expected `\{i\}.jpg yaw pitch roll`"):
        prepare_celebamask(raw, tmp_path / "out", RES)
    pose_file.write_text("1\nYaw Pitch Raw\n0.jpg 1 2 3\n")
    with pytest.raises(UserError, match="no pose for 5 image"):
        prepare_celebamask(raw, tmp_path / "out", RES)


def test_damaged_files_are_one_line_and_exit_code_2(raw: Path, tmp_path: Path) -> None:
    """A pose file that is not UTF-8, and a prepared dataset whose meta.json is damaged (read
    by the preparation and by training): one line naming the file and what to do."""
    pose_file = raw / "CelebAMask-HQ-pose-anno.txt"
    pose_file.write_bytes(pose_file.read_bytes().replace(b"Yaw", b"Y\xe4w"))
    args = ("celebamask-hq", "--raw", raw, "--out", tmp_path / "out", "--resolution", RES)
    bad_pose = _data_cli(*args, "--quiet")
    assert bad_pose.returncode == 2
    assert bad_pose.stderr.splitlines() == [
        f"error: {pose_file}: not UTF-8 text (byte 7 is 0xe4); use the pose file that came "
        "with these images, or remove it to give every image the frontal camera"]
    pose_file.unlink()
    assert _data_cli(*args, "--quiet").returncode == 0
    meta = tmp_path / "out" / "meta.json"
    meta.write_text('{"format": ')  # cut short
    again = _data_cli(*args, "--quiet")
    assert again.returncode == 2 and again.stderr.splitlines() == [
        f"error: {meta}: not valid JSON (line 1, column 12: Expecting value); "
        f"remove {tmp_path / 'out'} and run this command again"]
    train = subprocess.run(
        [sys.executable, "-m", "harness.train", "--preset", "smoke", "--run-dir",
         tmp_path / "run", "--set", f"data.path={tmp_path / 'out'}", "--set",
         "data.source=celebamask-hq", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert train.returncode == 2, train.stderr
    assert train.stderr.splitlines() == [
        f"error: {meta}: not valid JSON (line 1, column 12: Expecting value); "
        "the dataset is damaged: prepare it again"]
    assert not (tmp_path / "run").exists()
