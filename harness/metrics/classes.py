"""Class frequencies of generated masks against the data's: does the generator draw the parts?

The per-pixel class histogram of `count` generated masks (argmax of the final mask, cameras
from the FID/KID camera source) against the histogram of every training mask. The summary is
the total variation distance TV = 1/2 sum_k |p_gen(k) - p_data(k)| in [0, 1]: 0 when the
classes cover the same share of pixels, 1 when they share none. Horizontal flips do not change
a histogram, so the data's flip setting is irrelevant here.

metrics.json keys: `mask/class_tv`, and `mask/class_freq/<class>` (generated) beside
`mask/class_freq_data/<class>` (data) for every class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.config import ExperimentConfig
from harness.data.classes import CLASS_NAMES, NUM_CLASSES
from harness.data.loading import prepared_dataset_dir
from harness.metrics.generation import (
    MetricContext,
    MetricResult,
    batches,
    camera_sampler,
    device_of,
    labels,
    latents,
    render,
    streams,
    take,
)
from harness.runtime.cameras import CameraSampler


def class_histogram(class_ids: torch.Tensor | np.ndarray) -> np.ndarray:
    """(NUM_CLASSES,) float64 share of pixels of each class in an array of class ids."""
    ids = torch.as_tensor(np.asarray(class_ids)).flatten().long()
    counts = torch.bincount(ids, minlength=NUM_CLASSES).double().numpy()
    return counts / counts.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV distance 1/2 sum |p - q| between two histograms over the same classes."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def data_class_histogram(config: ExperimentConfig, chunk: int = 4096) -> np.ndarray:
    """The class histogram of the training split's masks (memory-mapped, in chunks)."""
    path = prepared_dataset_dir(config.data, config.model.resolution)
    masks = np.load(path / "masks.npy", mmap_mode="r")
    train = np.flatnonzero(np.load(path / "split.npy") == 0)
    counts = np.zeros(NUM_CLASSES)
    for start in range(0, len(train), chunk):
        block = np.asarray(masks[train[start:start + chunk]])
        counts += np.bincount(block.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts / counts.sum()


def evaluate_class_frequencies(generator: torch.nn.Module, config: ExperimentConfig,
                               cameras: CameraSampler, count: int, seed: int, batch_size: int
                               ) -> MetricResult:
    """TV distance between the class histograms of `count` generated masks and the data."""
    device = device_of(generator)
    latent_stream, camera_stream = streams(seed, "classes")
    all_cameras = cameras(count, camera_stream, device)
    counts = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for batch in batches(count, batch_size):
        w = latents(generator, batch.stop - batch.start, latent_stream)
        out = render(generator, w, *take(all_cameras, batch))
        counts += torch.bincount(labels(out["mask"]).flatten().cpu(),
                                 minlength=NUM_CLASSES).double()
    generated = (counts / counts.sum()).numpy()
    data = data_class_histogram(config)
    values = {"mask/class_tv": total_variation(generated, data)}
    values |= {f"mask/class_freq/{name}": float(generated[k])
               for k, name in enumerate(CLASS_NAMES)}
    values |= {f"mask/class_freq_data/{name}": float(data[k])
               for k, name in enumerate(CLASS_NAMES)}
    return MetricResult(values, num_samples=count, images=count)


def run(context: MetricContext) -> MetricResult:
    """Class frequencies of the context's generator (registry entry)."""
    return evaluate_class_frequencies(context.generator, context.config,
                                      camera_sampler(context.config), context.count,
                                      context.seed, context.config.evaluate.batch_size)


def lines(values: dict[str, Any]) -> list[str]:
    """The class-frequency line of the CLI summary."""
    if values.get("mask/class_tv") is None:
        return []
    return [f"mask classes: TV distance to the data's class frequencies = "
            f"{values['mask/class_tv']:.3f}"]
