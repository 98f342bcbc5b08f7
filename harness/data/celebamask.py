"""CelebAMask-HQ: its published layout prepared once into the prepared format at one resolution.

Layout read (RAW is the unpacked download):

    RAW/CelebA-HQ-img/{i}.jpg                                    images, 1024x1024
    RAW/CelebAMask-HQ-mask-anno/{i // 2000}/{i:05d}_{part}.png   binary part masks, 512x512;
                                                                 a part an image lacks has no file
    RAW/CelebAMask-HQ-pose-anno.txt                              head poses (optional)

The samples are the images present in CelebA-HQ-img, in numeric order. A sample's part masks are
painted into one label map in `CELEBAMASK_PAINT_ORDER` (later parts overwrite earlier ones) at
the largest mask size among its parts (smaller masks are scaled up with nearest neighbour); the
label map is then resized with nearest neighbour and the image with Lanczos (anti-aliased).
Images and masks may have any square size, and different sizes. A file that cannot be decoded,
a non-square file and an image with no mask file at all make a bad sample: an error naming the
file, or, with `skip_bad`, a sample left out and listed in `OUT/skipped.txt`.

Resumable in two stages. Samples are decoded block by block into `OUT.staged` through a
`PreparedWriter` (an interrupted run resumes from `OUT.staged.partial`). `OUT.staged` is then
renamed to `OUT` or, where bad samples were left out, copied without them into `OUT` (again
through a resumable writer). An interrupted run keeps these folders and says so; an error in
the input (a bad sample without `skip_bad`) removes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness.data.classes import CELEBAMASK_PAINT_ORDER, CLASS_IDS
from harness.data.prepared import FORMAT_VERSION, PreparedWriter, partial_path, read_meta
from harness.errors import UserError
from harness.io import read_json_file, read_text_file
from models.camera import intrinsics, look_at_origin

logger = logging.getLogger(__name__)

SOURCE = "celebamask-hq"
IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
POSE_FILE = "CelebAMask-HQ-pose-anno.txt"
MASKS_PER_FOLDER = 2000  # images i..i+1999 keep their masks in folder i // 2000
BLOCK_SIZE = 64  # samples decoded and written per step; the unit of resumption
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024  # pixels; the resolution is a power of two in between
SKIPPED_LIST = "skipped.txt"  # in OUT: one `path<TAB>reason` line per sample left out

# Head pose (degrees, Hopenet) -> camera angles (radians, models.camera):
#     yaw_ours = pi/2 + HOPENET_SIGNS[0] * radians(yaw),
#     pitch_ours = pi/2 + HOPENET_SIGNS[1] * radians(pitch);
# roll is dropped (our cameras have none; CelebA-HQ is aligned on the eyes, so it is small).
# The pose file holds Hopenet's estimates of the head's rotation. Hopenet's own visualiser
# (natanielruiz/deep-head-pose, code/utils.py, draw_axis) draws the face's forward axis at
# image offset (-sin(yaw), -cos(yaw) sin(pitch)) with image y pointing down: a positive yaw turns
# the face toward the image's left (the subject's right) and a positive pitch tilts it up.
# Seen from the head, a face turned toward the image's left is a camera moved toward the
# subject's left, world +x, i.e. yaw_ours < pi/2: sign -1. A face tilted up is a camera moved
# below the head, i.e. pitch_ours > pi/2: sign +1. (pi-GAN-based code, whose cameras follow the
# same convention as ours, reads this file the same way: yaw = 90 - yaw, pitch = 90 + pitch.)
HOPENET_SIGNS = (-1.0, 1.0)

# (class id, part name) in painting order.
_PARTS = tuple((CLASS_IDS[name], part) for name, parts in CELEBAMASK_PAINT_ORDER for part in parts)
_IMAGE_NAME = re.compile(r"(\d+)\.jpg")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises for a broken file


@dataclass(frozen=True)
class _Sample:
    """One image and its part masks, as found on disk."""

    index: int
    image: Path
    masks: tuple[tuple[int, Path], ...]  # (class id, mask file) in painting order


class _BadFile(Exception):
    """A file of one sample that cannot be used: undecodable, not square, or missing."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def check_raw(raw: Path, resolution: int) -> None:
    """A UserError unless `raw` looks like the unpacked CelebAMask-HQ folder and `resolution`
    is supported (what can be known without reading the images)."""
    if not (MIN_RESOLUTION <= resolution <= MAX_RESOLUTION and resolution & (resolution - 1) == 0):
        raise UserError(
            f"resolution {resolution} is not supported: use a power of two between "
            f"{MIN_RESOLUTION} and {MAX_RESOLUTION}"
        )
    for folder in (IMAGE_DIR, MASK_DIR):
        if not (raw / folder).is_dir():
            raise UserError(
                f"{raw / folder} not found: --raw must be the unpacked CelebAMask-HQ folder "
                f"holding {IMAGE_DIR}/{{i}}.jpg and {MASK_DIR}/{{i//2000}}/{{i:05d}}_{{part}}.png "
                f"(and optionally {POSE_FILE})"
            )


def prepare_celebamask(
    raw_dir: str | Path,
    out_dir: str | Path,
    resolution: int,
    val_start: int = 28000,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Prepare CelebAMask-HQ from `raw_dir` into `out_dir`; returns the dataset's metadata.

    Images with index < `val_start` form the train split, the rest the val split. A bad sample
    (see the module docstring) is a UserError naming its file, which leaves nothing behind, or
    with `skip_bad` is left out and listed in `out_dir/skipped.txt`. Running it again resumes an
    interrupted run, and is a no-op once `out_dir` holds the same job (raw folder, resolution,
    val_start, images, poses).
    """
    raw = Path(raw_dir)
    out = Path(out_dir)
    check_raw(raw, resolution)
    indices = _image_indices(raw / IMAGE_DIR)
    poses = _read_poses(raw / POSE_FILE, indices) if (raw / POSE_FILE).is_file() else None
    params = {
        "raw_dir": os.path.realpath(raw),
        "resolution": resolution,
        "val_start": val_start,
        "num_images": len(indices),
        "poses": "none" if poses is None else "hopenet",
    }
    if (out / "meta.json").is_file():
        meta = read_json_file(out / "meta.json", f"remove {out} and run this command again")
        job = {"format": FORMAT_VERSION, "source": SOURCE, "params": params}
        if {key: meta.get(key) for key in job} == job:
            logger.info("%s is already prepared with these settings", out)
            return meta
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"{out} exists and is not a prepared dataset; choose another --out or empty it"
        )

    staged = out.with_name(out.name + ".staged")
    work = (partial_path(staged), staged, partial_path(out))  # what a run leaves unpublished
    try:
        return _stage_and_publish(raw, staged, out, indices, poses, params, skip_bad)
    except UserError:
        for folder in work:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        kept = [str(folder) for folder in work if folder.exists()]
        if kept:
            logger.warning("kept for resuming: %s (run the same command again to resume; "
                           "delete to start over)", ", ".join(kept))
        raise


def _stage_and_publish(
    raw: Path,
    staged: Path,
    out: Path,
    indices: list[int],
    poses: dict[int, tuple[float, float]] | None,
    params: dict[str, Any],
    skip_bad: bool,
) -> dict[str, Any]:
    """Decode into `staged` (unless done), then publish it as `out`; returns the metadata."""
    staged_meta = staged / "meta.json"
    fix = f"remove {staged} and run this command again"
    if not (staged_meta.is_file() and read_json_file(staged_meta, fix).get("params") == params):
        _decode(raw, staged, indices, poses, params, skip_bad)
    skipped = _read_skipped(staged)
    _check_skipped(skipped, skip_bad)
    if not skipped:
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
        return read_meta(out)
    return _compact(staged, out, skipped, params)


def _image_indices(image_dir: Path) -> list[int]:
    """Indices of the `{i}.jpg` files in `image_dir`, sorted numerically."""
    indices = sorted(
        int(match.group(1))
        for name in os.listdir(image_dir)
        if (match := _IMAGE_NAME.fullmatch(name))
    )
    if not indices:
        raise UserError(f"{image_dir} holds no {{i}}.jpg images (expected 0.jpg ... 29999.jpg)")
    return indices


def _read_poses(pose_file: Path, indices: list[int]) -> dict[int, tuple[float, float]]:
    """Camera angles (yaw, pitch in radians, ours) per image index, from the Hopenet pose file.

    Format: the count, a header line `Yaw Pitch Raw`, then `{i}.jpg yaw pitch roll` in degrees.
    """
    poses: dict[int, tuple[float, float]] = {}
    lines = read_text_file(pose_file, "use the pose file that came with these images, or "
                           "remove it to give every image the frontal camera").splitlines()
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        match = _IMAGE_NAME.fullmatch(fields[0])
        try:
            yaw, pitch, _roll = (float(field) for field in fields[1:])
        except ValueError:
            match = None
        if match is None:
            raise UserError(
                f"{pose_file}:{number}: expected `{{i}}.jpg yaw pitch roll` in degrees, "
                f"got {line.strip()!r}"
            )
        poses[int(match.group(1))] = (
            math.pi / 2 + HOPENET_SIGNS[0] * math.radians(yaw),
            math.pi / 2 + HOPENET_SIGNS[1] * math.radians(pitch),
        )
    missing = [i for i in indices if i not in poses]
    if missing:
        raise UserError(
            f"{pose_file} has no pose for {len(missing)} image(s), the first {missing[0]}.jpg; "
            "use the pose file that came with these images, or remove it to give every image "
            "the frontal camera"
        )
    return poses


def _find_samples(raw: Path, indices: list[int]) -> list[_Sample]:
    """Each image with the part mask files that exist for it (one directory listing per folder)."""
    listings: dict[int, set[str]] = {}
    samples = []
    for index in indices:
        folder = index // MASKS_PER_FOLDER
        if folder not in listings:
            mask_folder = raw / MASK_DIR / str(folder)
            listings[folder] = set(os.listdir(mask_folder)) if mask_folder.is_dir() else set()
        masks = tuple(
            (class_id, raw / MASK_DIR / str(folder) / name)
            for class_id, part in _PARTS
            if (name := f"{index:05d}_{part}.png") in listings[folder]
        )
        samples.append(_Sample(index, raw / IMAGE_DIR / f"{index}.jpg", masks))
    return samples


def _open_square(path: Path) -> Image.Image:
    """The decoded image at `path`; `_BadFile` if it cannot be decoded or is not square."""
    try:
        with Image.open(path) as image:
            image.load()
    except _DECODE_ERRORS as error:
        raise _BadFile(path, f"cannot be decoded ({error})") from None
    if image.width != image.height:
        raise _BadFile(path, f"is {image.width}x{image.height}, expected a square")
    return image


def _read_mask(path: Path) -> np.ndarray:
    """(S, S) bool: the part's pixels (nonzero in any colour channel; alpha is ignored)."""
    image = _open_square(path)
    if image.mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")
    values = np.asarray(image)
    return values.any(axis=-1) if values.ndim == 3 else values != 0


def _load_sample(sample: _Sample, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample's RGB image (R, R, 3) and class-id label map (R, R), both uint8."""
    if not sample.masks:
        raise _BadFile(
            sample.image,
            f"has no mask file ({MASK_DIR}/{sample.index // MASKS_PER_FOLDER}/"
            f"{sample.index:05d}_*.png)",
        )
    masks = [(class_id, _read_mask(path)) for class_id, path in sample.masks]
    size = max(mask.shape[0] for _, mask in masks)
    labels = np.zeros((size, size), dtype=np.uint8)  # (S, S) at the largest mask size
    for class_id, mask in masks:
        if mask.shape[0] != size:
            mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
        labels[mask] = class_id
    label_image = Image.fromarray(labels)
    if size != resolution:
        label_image = label_image.resize((resolution, resolution), Image.Resampling.NEAREST)

    image = _open_square(sample.image).convert("RGB")
    if image.width != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image), np.asarray(label_image)


def _decode(
    raw: Path,
    staged: Path,
    indices: list[int],
    poses: dict[int, tuple[float, float]] | None,
    params: dict[str, Any],
    skip_bad: bool,
) -> None:
    """Decode every sample into the prepared dataset `staged`, resuming a partial one.

    A bad sample raises a UserError, or with `skip_bad` gets an all-zero slot and an entry in
    `skipped.json` (position -> [path, reason]), saved before its block is marked done.
    """
    samples = _find_samples(raw, indices)
    writer = PreparedWriter(
        staged, len(samples), params["resolution"], SOURCE, params, has_depth=False
    )
    skipped_file = writer.partial_dir / "skipped.json"
    skipped = _read_skipped(writer.partial_dir)
    _check_skipped(skipped, skip_bad)

    angles = np.array(  # (N, 2) yaw, pitch
        [poses[i] if poses is not None else (math.pi / 2, math.pi / 2) for i in indices],
        dtype=np.float64,
    )
    cameras = look_at_origin(torch.from_numpy(angles)).float().numpy()  # (N, 4, 4)
    intrinsic = intrinsics().numpy()  # (3, 3)
    split = (np.array(indices) >= params["val_start"]).astype(np.uint8)  # (N,)
    resolution = params["resolution"]

    def load(sample: _Sample) -> tuple[np.ndarray, np.ndarray] | _BadFile:
        try:
            return _load_sample(sample, resolution)
        except _BadFile as bad:
            return bad

    done = int(writer.done_mask.sum())
    logger.info(
        "preparing %d CelebAMask-HQ images at %dx%d into %s (%d already done)",
        len(samples),
        resolution,
        resolution,
        staged,
        done,
    )
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
        tqdm(total=len(samples), initial=done, desc=SOURCE, unit="img",
             disable=not logger.isEnabledFor(logging.INFO)) as progress,
    ):
        for start in range(0, len(samples), BLOCK_SIZE):
            stop = min(start + BLOCK_SIZE, len(samples))
            if writer.done_mask[start:stop].all():
                continue
            images = np.zeros((stop - start, resolution, resolution, 3), dtype=np.uint8)
            masks = np.zeros((stop - start, resolution, resolution), dtype=np.uint8)
            for offset, result in enumerate(pool.map(load, samples[start:stop])):
                if isinstance(result, _BadFile):
                    skipped[start + offset] = (str(result.path), result.reason)
                    _check_skipped(skipped, skip_bad)
                else:
                    images[offset], masks[offset] = result
            if skipped:
                _atomic_write_text(skipped_file, json.dumps(skipped))
            writer.write(
                start,
                images=images,
                masks=masks,
                angles=angles[start:stop].astype(np.float32),
                cameras=cameras[start:stop],
                intrinsics=np.broadcast_to(intrinsic, (stop - start, 3, 3)),
                identity=np.full(stop - start, -1, dtype=np.int64),
                split=split[start:stop],
            )
            progress.update(stop - start)
    writer.finalize({"poses": params["poses"], "num_skipped": len(skipped)})


def _read_skipped(folder: Path) -> dict[int, tuple[str, str]]:
    """The bad samples recorded in `folder/skipped.json`: position -> (path, reason)."""
    skipped_file = folder / "skipped.json"
    if not skipped_file.is_file():
        return {}
    skipped = read_json_file(skipped_file, f"remove {folder} and run this command again")
    return {int(key): tuple(value) for key, value in skipped.items()}


def _check_skipped(skipped: dict[int, tuple[str, str]], skip_bad: bool) -> None:
    """Raise the UserError for the first bad sample unless bad samples may be left out."""
    if skipped and not skip_bad:
        path, reason = skipped[min(skipped)]
        raise UserError(
            f"{path} {reason}; replace the file, or pass --skip-bad to leave such samples out "
            f"(they are listed in OUT/{SKIPPED_LIST})"
        )


def _compact(
    staged: Path, out: Path, skipped: dict[int, tuple[str, str]], params: dict[str, Any]
) -> dict[str, Any]:
    """Copy the staged dataset without its bad samples into `out`; returns the metadata."""
    staged_meta = read_meta(staged)
    keep = np.setdiff1d(np.arange(staged_meta["num_samples"]), list(skipped))
    if len(keep) == 0:
        raise UserError(
            f"every one of the {len(skipped)} images in {params['raw_dir']} is bad, for "
            f"example {skipped[min(skipped)][0]} {skipped[min(skipped)][1]}"
        )
    writer = PreparedWriter(out, len(keep), params["resolution"], SOURCE, params, has_depth=False)
    arrays = {name: np.load(staged / f"{name}.npy", mmap_mode="r") for name in writer.names}
    for start in range(0, len(keep), BLOCK_SIZE):
        rows = keep[start : start + BLOCK_SIZE]
        if not writer.done_mask[start : start + len(rows)].all():
            writer.write(start, **{name: array[rows] for name, array in arrays.items()})
    arrays.clear()  # close the memory maps before the staged copy is removed
    lines = [f"{path}\t{reason}\n" for _, (path, reason) in sorted(skipped.items())]
    (writer.partial_dir / SKIPPED_LIST).write_text("".join(lines))
    meta = writer.finalize({"poses": params["poses"], "num_skipped": len(skipped)})
    shutil.rmtree(staged)
    logger.warning(
        "left out %d bad sample(s); they are listed in %s", len(skipped), out / SKIPPED_LIST
    )
    return meta


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
