"""Turning generator outputs into pictures: colourised masks and image grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.classes import CLASS_COLOURS
from harness.io import atomic_write


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8."""
    pixels = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).cpu().numpy()


def colourise_mask(mask: torch.Tensor) -> np.ndarray:
    """(H, W) class ids or (K, H, W) scores -> (H, W, 3) uint8 in the class colours."""
    labels = mask.argmax(0) if mask.dim() == 3 else mask
    palette = np.array(CLASS_COLOURS, dtype=np.uint8)
    return palette[labels.detach().cpu().numpy().clip(0, len(palette) - 1)]


def image_grid(tiles: list[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 arrays into one grid, row-major."""
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        grid[top : top + height, left : left + width] = tile
    return grid


def save_png(array: np.ndarray, path: Path, scale: int = 1) -> None:
    """Save an (H, W, 3) uint8 array as PNG atomically, optionally upscaled (nearest)."""
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    atomic_write(path, lambda file: image.save(file, format="PNG"))
