"""From a `DataConfig` to a prepared dataset on disk (generated or prepared on first use)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.config import DataConfig
from harness.data.prepared import PreparedDataset, read_meta
from harness.errors import UserError


def cache_root(data: DataConfig) -> Path:
    """Where prepared datasets are cached: data.cache_dir, $HARNESS_CACHE_DIR or ~/.cache."""
    if data.cache_dir:
        return Path(data.cache_dir)
    env = os.environ.get("HARNESS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ssgan3d-harness"


def check_data(data: DataConfig, resolution: int) -> None:
    """A UserError when `data` cannot give a dataset at `resolution`, as far as can be known
    without preparing it (a missing folder, a prepared folder at another resolution)."""
    if data.source == "synthetic":
        return
    path = Path(str(data.path)).expanduser()
    if (path / "meta.json").is_file():
        meta = read_meta(path)
        if meta["resolution"] != resolution:
            raise UserError(
                f"{path}: prepared at {meta['resolution']}x{meta['resolution']} but the model "
                f"renders {resolution}x{resolution}; point data.path at the raw CelebAMask-HQ "
                "folder (it is prepared once per resolution) or at a matching prepared folder"
            )
        return
    if not path.is_dir():
        raise UserError(f"data.path {path}: folder not found; give the CelebAMask-HQ folder")
    from harness.data.celebamask import check_raw

    check_raw(path, resolution)


def prepared_dataset_dir(data: DataConfig, resolution: int) -> Path:
    """The prepared dataset for `data` at `resolution`, creating it on first use."""
    if data.source == "synthetic":
        from harness.data.synthetic import ensure_synthetic

        return ensure_synthetic(
            identities=data.identities, views=data.views, resolution=resolution,
            seed=data.seed, cache_dir=cache_root(data) / "synthetic",
        )
    check_data(data, resolution)
    out = _prepared_path(data, resolution)
    if not (out / "meta.json").is_file():
        from harness.data.celebamask import prepare_celebamask

        prepare_celebamask(Path(str(data.path)).expanduser(), out, resolution)
    return out


def existing_dataset_dir(data: DataConfig, resolution: int) -> Path | None:
    """The prepared dataset for `data` at `resolution` if it is on this machine (None: not
    prepared, or no data folder); never creates anything."""
    if data.source == "synthetic":
        from harness.data.synthetic import synthetic_dir

        out = synthetic_dir(data.identities, data.views, resolution, data.seed,
                            cache_root(data) / "synthetic")
    elif data.path is None:
        return None
    else:
        out = _prepared_path(data, resolution)
    return out if (out / "meta.json").is_file() else None


def _prepared_path(data: DataConfig, resolution: int) -> Path:
    """A real dataset's prepared copy: the folder itself when prepared already, else its
    place in the cache (keyed by the folder's absolute path and the resolution)."""
    path = Path(str(data.path)).expanduser()
    if (path / "meta.json").is_file():
        return path
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return cache_root(data) / "celebamask-hq" / f"{path.resolve().name}-{digest}-{resolution}"


def open_dataset(data: DataConfig, resolution: int, split: str = "train") -> PreparedDataset:
    """The training (or `split`) Dataset for `data` at `resolution`."""
    return PreparedDataset(
        prepared_dataset_dir(data, resolution), split=split, flip=data.flip and split == "train"
    )
