"""Class-frequency metric: histograms, TV distance, and generated masks against the data's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.config import load_config
from harness.data.classes import CLASS_IDS, NUM_CLASSES
from harness.data.loading import prepared_dataset_dir
from harness.metrics.classes import (
    class_histogram,
    data_class_histogram,
    evaluate_class_frequencies,
    total_variation,
)
from harness.runtime.cameras import sample_cameras


class MaskReplay(torch.nn.Module):
    """A stand-in generator whose masks are given class-id maps, in order."""

    def __init__(self, class_ids: torch.Tensor):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the metric reads the device here
        self.class_ids = class_ids
        self.next = 0

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(n, 1, 1)

    def forward(self, w, cam2world, intrinsic):
        ids = self.class_ids[self.next:self.next + len(w)]
        self.next += len(w)
        return {"mask": F.one_hot(ids, NUM_CLASSES).permute(0, 3, 1, 2).float() * 2 - 1}


def test_histogram_and_tv_on_fixed_arrays() -> None:
    ids = np.array([[0, 0, 1, 1], [1, 2, 2, 2]])
    expected = np.zeros(NUM_CLASSES)
    expected[[0, 1, 2]] = [2 / 8, 3 / 8, 3 / 8]
    np.testing.assert_allclose(class_histogram(ids), expected)
    other = np.zeros(NUM_CLASSES)
    other[[0, 3]] = [0.5, 0.5]
    # |2/8 - 4/8| + 3/8 + 3/8 + 4/8 = 1.5, halved
    assert total_variation(expected, other) == pytest.approx(0.75)
    assert total_variation(expected, expected) == 0.0


def test_generated_masks_against_the_data(smoke_overrides) -> None:
    config = load_config(None, "smoke", smoke_overrides)
    path = prepared_dataset_dir(config.data, config.model.resolution)
    train = np.load(path / "split.npy") == 0
    masks = torch.from_numpy(np.load(path / "masks.npy")[train]).long()
    data = data_class_histogram(config)
    np.testing.assert_allclose(data, class_histogram(masks.numpy()))

    replay = evaluate_class_frequencies(MaskReplay(masks), config, sample_cameras,
                                        len(masks), seed=0, batch_size=5)
    assert replay.values["mask/class_tv"] == pytest.approx(0.0, abs=1e-12)

    background = torch.full_like(masks, CLASS_IDS["background"])
    empty = evaluate_class_frequencies(MaskReplay(background), config, sample_cameras,
                                       len(masks), seed=0, batch_size=5)
    assert empty.values["mask/class_tv"] == pytest.approx(1 - data[CLASS_IDS["background"]])
    assert empty.values["mask/class_freq/background"] == 1.0
    assert empty.values["mask/class_freq_data/face"] == pytest.approx(data[CLASS_IDS["face"]])
