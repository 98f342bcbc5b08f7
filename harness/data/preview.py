"""A preview grid of a prepared dataset: images beside their colourised masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.prepared import PreparedDataset
from harness.visualize import colourise_mask, image_grid, save_png, to_uint8_image


def preview_grid(dataset_dir: str | Path, out_path: str | Path, count: int = 24,
                 seed: int = 0) -> Path:
    """Write a PNG of `count` random samples, each as an (image, mask) pair, 4 pairs a row."""
    dataset = PreparedDataset(dataset_dir, split="all")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(dataset), size=min(count, len(dataset)), replace=False))
    tiles = []
    for index in indices:
        sample = dataset[int(index)]
        tiles += [to_uint8_image(sample["image"]), colourise_mask(sample["mask"])]
    scale = max(1, 128 // dataset.resolution)
    out_path = Path(out_path)
    save_png(image_grid(tiles, columns=8), out_path, scale=scale)
    return out_path
