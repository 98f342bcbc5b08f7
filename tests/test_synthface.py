"""The shipped `synthface-v1` extractor on synthetic identities it never saw in training.

Identity: cosine similarity of embeddings separates same-identity view pairs from different
identities (ROC AUC). FID through torch-fidelity with the registered extractor: two disjoint
halves of the data are close, and FID grows with the strength of blur, noise and colour shift.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
from scipy.stats import rankdata
from torch.utils.data import Dataset

from harness.data.synthetic import ensure_synthetic
from harness.errors import UserError
from harness.metrics.extractors.synthface import (
    FEATURE_DIM,
    NAME,
    WEIGHTS_PATH,
    load_synthface,
)

IDENTITIES, VIEWS, SEED = 120, 4, 20261122  # training used seed 0: these identities are unseen
# Perturbation -> three increasing strengths. The extractor is trained for identity with colour
# jitter and noise augmentation, so it is largely invariant to mild perturbations: with 240
# images a side, FID moves measurably only for strong ones (see test_fid_ranks_perturbations).
STRENGTHS = {
    "blur": (2.0, 3.5, 6.0),  # gaussian sigma, pixels
    "noise": (40.0, 64.0, 96.0),  # std, uint8 levels
    "colour": (32.0, 64.0, 128.0),  # per-channel offset (+s, 0, -s), uint8 levels
}
FAR = 1.3  # the strongest perturbation's FID exceeds the halves' FID by this factor


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, 64, 64) and identity ids (N,) of a small unseen synthetic set."""
    path = ensure_synthetic(IDENTITIES, VIEWS, 64, SEED, cache_dir=tmp_path_factory.mktemp("sf"))
    images = torch.from_numpy(np.load(path / "images.npy")).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.load(path / "identity.npy").astype(np.int64))


class Images(Dataset):
    """A torch Dataset of uint8 (3, H, W) images, as torch-fidelity wants."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney U) formula, ties given average ranks."""
    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def perturb(images: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """A deterministically perturbed uint8 copy of `images`."""
    x = images.float()
    if kind == "blur":
        radius = int(np.ceil(3 * strength))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / strength) ** 2)
        kernel = (kernel / kernel.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, K)
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.transpose(2, 3),
                     groups=3)
    elif kind == "noise":
        generator = torch.Generator().manual_seed(0)
        x = x + torch.randn(x.shape, generator=generator) * strength
    elif kind == "colour":
        x = x + torch.tensor([strength, 0.0, -strength]).view(1, 3, 1, 1)
    else:
        raise ValueError(kind)
    return x.round().clamp(0, 255).to(torch.uint8)


def fid(first: torch.Tensor, second: torch.Tensor, **kwargs: object) -> dict[str, float]:
    """torch-fidelity metrics between two uint8 image sets with `synthface-v1`, on the CPU."""
    return torch_fidelity.calculate_metrics(
        input1=Images(first), input2=Images(second), feature_extractor=NAME, fid=True,
        cuda=False, save_cpu_ram=True, cache=False, verbose=False, batch_size=128, **kwargs,
    )


def test_identity_auc(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Views of one unseen identity are closer in embedding than views of different ones."""
    images, identity = data
    embedding = load_synthface().embed(images)
    assert embedding.shape == (len(images), 128)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    i, j = torch.triu_indices(len(images), len(images), offset=1)
    cosine = (embedding[i] * embedding[j]).sum(dim=1).numpy()
    same = (identity[i] == identity[j]).numpy()
    auc = roc_auc(cosine, same)
    print(f"identity AUC {auc:.4f} over {same.sum()} same / {(~same).sum()} different pairs")
    assert auc >= 0.95


def test_fid_ranks_perturbations(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """FID(half A, half B) is below FID against perturbed B, and grows with strength.

    The halves hold different identities, and 240 samples of a 256-d feature leave a large
    estimation bias, so FID(A, B) is already about 10; perturbations add to it, monotonically.
    """
    images, identity = data
    first = identity < IDENTITIES // 2  # disjoint halves by identity
    reference, other = images[first], images[~first]
    base = fid(reference, other, kid=True, kid_subset_size=50)
    print(f"FID halves {base['frechet_inception_distance']:.3f} "
          f"KID {base['kernel_inception_distance_mean']:.5f}")
    for kind, strengths in STRENGTHS.items():
        values = [base["frechet_inception_distance"]] + [
            fid(reference, perturb(other, kind, s))["frechet_inception_distance"]
            for s in strengths
        ]
        pairs = zip((0.0, *strengths), values, strict=True)
        print(kind, " ".join(f"{s}: {v:.3f}" for s, v in pairs))
        assert all(a < b for a, b in pairwise(values)), (kind, values)
        assert values[3] > FAR * values[0], (kind, values)


def test_extractor_features(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The registered extractor takes uint8 of any size and returns the requested features."""
    from torch_fidelity.utils import create_feature_extractor

    extractor = create_feature_extractor(NAME, ["embedding", "fid"], cuda=False)
    images = data[0][:8]
    embedding, pooled = extractor(images)
    assert pooled.shape == (8, FEATURE_DIM) and embedding.shape == (8, 128)
    bigger = F.interpolate(images.float(), size=(128, 128), mode="bilinear").round().byte()
    embedding_big = extractor(bigger)[0]
    assert (embedding * embedding_big).sum(dim=1).min() > 0.9
    assert extractor.get_default_feature_layer_for_metric("kid") == "fid"


def test_missing_weights(tmp_path: Path) -> None:
    """A missing or unreadable weights file is a UserError naming the path."""
    missing = tmp_path / "nowhere" / "synthface-v1.pt"
    with pytest.raises(UserError, match=str(missing)):
        load_synthface(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=str(garbage)):
        load_synthface(garbage)
    assert WEIGHTS_PATH.is_file() and WEIGHTS_PATH.stat().st_size <= 10 * 2**20
