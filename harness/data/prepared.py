"""The prepared dataset format shared by every source, its atomic writer, and its Dataset.

A prepared dataset is a directory of memory-mappable `.npy` arrays plus `meta.json`:

    images.npy      uint8   (N, R, R, 3)  RGB
    masks.npy       uint8   (N, R, R)     class ids (harness.data.classes)
    depth.npy       float16 (N, R, R)     camera-space z depth in head units (optional)
    angles.npy      float32 (N, 2)        yaw, pitch in radians (models.camera conventions)
    cameras.npy     float32 (N, 4, 4)     camera-to-world, OpenCV axes
    intrinsics.npy  float32 (N, 3, 3)     normalised intrinsics
    identity.npy    int64   (N,)          identity id, -1 where unknown
    split.npy       uint8   (N,)          0 = train, 1 = val
    meta.json       source, resolution, counts, class names, content hash, source parameters

The writer fills `<out>.partial/` and renames it to `<out>` only when complete, so a reader
never sees a half-written dataset; an interrupted run resumes from the partial directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.data.classes import CLASS_NAMES, NUM_CLASSES
from harness.errors import UserError
from harness.io import read_json_file

FORMAT_VERSION = "ssgan3d-prepared-v1"
SPLITS = {"train": 0, "val": 1}
_ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    # name: (dtype, per-sample shape with R standing for the resolution)
    "images": ("uint8", (-1, -1, 3)),
    "masks": ("uint8", (-1, -1)),
    "depth": ("float16", (-1, -1)),
    "angles": ("float32", (2,)),
    "cameras": ("float32", (4, 4)),
    "intrinsics": ("float32", (3, 3)),
    "identity": ("int64", ()),
    "split": ("uint8", ()),
}
_HASHED = ("images", "masks", "angles", "identity", "split")


def partial_path(out_dir: str | Path) -> Path:
    """Where `PreparedWriter` fills the dataset `out_dir` before publishing it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def _shape(name: str, count: int, resolution: int) -> tuple[int, ...]:
    per_sample = tuple(resolution if size == -1 else size for size in _ARRAYS[name][1])
    return (count, *per_sample)


class PreparedWriter:
    """Fills a prepared dataset in place, resumably, and publishes it atomically.

    Use `write(start, **arrays)` for consecutive blocks of samples, `done_mask` to see which
    samples an earlier, interrupted run already wrote, and `finalize()` to publish.
    `params` identify the job: a partial directory left with other params is discarded.
    """

    def __init__(
        self,
        out_dir: str | Path,
        num_samples: int,
        resolution: int,
        source: str,
        params: dict[str, Any],
        has_depth: bool,
    ):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"{self.out_dir}: a file, not a dataset folder; give a new folder "
                            "(or a prepared dataset's) as the output")
        self.partial_dir = partial_path(self.out_dir)
        self.num_samples = num_samples
        self.resolution = resolution
        self.source = source
        self.params = params
        self.names = [name for name in _ARRAYS if has_depth or name != "depth"]
        job = {"source": source, "num_samples": num_samples, "resolution": resolution,
               "params": params, "arrays": self.names}
        job_file = self.partial_dir / "job.json"
        if self.partial_dir.exists():
            try:
                same_job = json.loads(job_file.read_text()) == job
            except (OSError, ValueError):
                same_job = False
            if not same_job:
                shutil.rmtree(self.partial_dir)
        fresh = not self.partial_dir.exists()
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            for name in self.names:
                np.lib.format.open_memmap(
                    self.partial_dir / f"{name}.npy", mode="w+", dtype=_ARRAYS[name][0],
                    shape=_shape(name, num_samples, resolution),
                ).flush()
            np.save(self.partial_dir / "done.npy", np.zeros(num_samples, dtype=bool))
            job_file.write_text(json.dumps(job, indent=1))
        self.arrays = {
            name: np.load(self.partial_dir / f"{name}.npy", mmap_mode="r+") for name in self.names
        }
        self.done_mask = np.load(self.partial_dir / "done.npy")

    def write(self, start: int, **arrays: np.ndarray) -> None:
        """Store samples start..start+n for every array of the format, then mark them done."""
        missing = set(self.names) - set(arrays)
        extra = set(arrays) - set(self.names)
        assert not missing and not extra, f"missing {missing}, unexpected {extra}"
        count = len(arrays["images"])
        for name, values in arrays.items():
            self.arrays[name][start : start + count] = values
        for array in self.arrays.values():
            array.flush()
        self.done_mask[start : start + count] = True
        _atomic_save_npy(self.partial_dir / "done.npy", self.done_mask)

    def finalize(self, extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Hash the content, write meta.json and publish `<out>`; returns the metadata."""
        assert self.done_mask.all(), "finalize() before every sample was written"
        for array in self.arrays.values():
            array.flush()
        meta = {
            "format": FORMAT_VERSION,
            "source": self.source,
            "resolution": self.resolution,
            "num_samples": self.num_samples,
            "num_train": int((self.arrays["split"][:] == 0).sum()),
            "num_val": int((self.arrays["split"][:] == 1).sum()),
            "classes": list(CLASS_NAMES),
            "has_depth": "depth" in self.names,
            "content_hash": content_hash({n: self.arrays[n] for n in _HASHED}),
            "params": self.params,
            **(extra_meta or {}),
        }
        self.arrays.clear()
        (self.partial_dir / "done.npy").unlink()
        (self.partial_dir / "job.json").unlink()
        (self.partial_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.partial_dir, self.out_dir)
        return meta


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def content_hash(arrays: dict[str, np.ndarray], chunk: int = 256) -> str:
    """sha256 (hex, 16 chars) over the arrays' bytes, read in chunks of samples."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        for start in range(0, len(array), chunk):
            digest.update(np.ascontiguousarray(array[start : start + chunk]).tobytes())
    return digest.hexdigest()[:16]


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a prepared dataset; a UserError if `path` is not one."""
    meta_file = Path(path) / "meta.json"
    if not meta_file.is_file():
        raise UserError(
            f"{path}: not a prepared dataset (no meta.json); create one with "
            "`python -m harness.data synthetic --out DIR` or `python -m harness.data "
            "celebamask-hq --raw RAW --out DIR`"
        )
    meta = read_json_file(meta_file, "the dataset is damaged: prepare it again")
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{meta_file}: format {version!r}, expected {FORMAT_VERSION!r}; "
            "prepare the dataset again with this version of the harness"
        )
    return meta


def mirror_camera(cam2world: torch.Tensor) -> torch.Tensor:
    """The camera that sees the horizontally flipped image of a scene mirrored in x = 0."""
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=cam2world.dtype))
    return flip @ cam2world @ flip


class PreparedDataset(Dataset):
    """Samples of a prepared dataset as tensors.

    Each item is a dict: `image` float (3, R, R) in [-1, 1]; `mask` int64 (R, R) class ids (or
    float (K, R, R) one-hot with `one_hot=True`); `angles` (2,) yaw/pitch; `cam2world` (4, 4);
    `intrinsics` (3, 3); `identity` int (-1 unknown); `index` int; `depth` (R, R) where known.
    `flip=True` doubles the dataset with horizontally mirrored copies (StyleGAN's x-flip), each
    with its camera mirrored to match (yaw -> pi - yaw).
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        flip: bool = False,
        one_hot: bool = False,
    ):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        if split not in (*SPLITS, "all"):
            raise UserError(f"split {split!r} is not one of train, val, all")
        split_ids = np.load(self.path / "split.npy")
        selected = np.arange(len(split_ids)) if split == "all" else np.flatnonzero(
            split_ids == SPLITS[split]
        )
        self.indices = selected
        self.flip = flip
        self.one_hot = one_hot
        self.resolution = int(self.meta["resolution"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.indices) * (2 if self.flip else 1)

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = [n for n in _ARRAYS if n != "depth" or self.meta["has_depth"]]
            self._arrays = {n: np.load(self.path / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # memory maps are reopened in each DataLoader worker
        return state

    def __getitem__(self, item: int) -> dict[str, Any]:
        arrays = self._open()
        mirrored = self.flip and item >= len(self.indices)
        index = int(self.indices[item % len(self.indices)])
        image = torch.from_numpy(np.array(arrays["images"][index])).permute(2, 0, 1)
        image = image.float() / 127.5 - 1.0  # (3, R, R) in [-1, 1]
        mask = torch.from_numpy(np.array(arrays["masks"][index])).long()  # (R, R)
        cam2world = torch.from_numpy(np.array(arrays["cameras"][index]))
        angles = torch.from_numpy(np.array(arrays["angles"][index]))
        sample: dict[str, Any] = {"index": index, "identity": int(arrays["identity"][index])}
        depth = None
        if "depth" in arrays:
            depth = torch.from_numpy(np.array(arrays["depth"][index]).astype(np.float32))
        if mirrored:
            image, mask = image.flip(-1), mask.flip(-1)
            depth = None if depth is None else depth.flip(-1)
            cam2world = mirror_camera(cam2world)
            angles = torch.stack([math.pi - angles[0], angles[1]])
        sample["image"] = image
        sample["mask"] = (
            torch.nn.functional.one_hot(mask, NUM_CLASSES).permute(2, 0, 1).float()
            if self.one_hot
            else mask
        )
        sample["angles"] = angles
        sample["cam2world"] = cam2world
        sample["intrinsics"] = torch.from_numpy(np.array(arrays["intrinsics"][index]))
        if depth is not None:
            sample["depth"] = depth
        return sample
