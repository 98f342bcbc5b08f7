"""Latent sampling as SemanticStyleGAN trains (one w in every slot, style mixing) and the
per-slot option, for every model with Eq. 1's slots."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config
from models.registry import get_model

SSGAN_FAMILY = ("3dssgan", "cnerf", "ssgan2d")


def build(name: str, *overrides: str) -> torch.nn.Module:
    config = load_config(None, "smoke", [f"model.name={name}", *overrides])
    torch.manual_seed(0)
    return get_model(name).build_generator(config.model).eval()


def sample(generator: torch.nn.Module, n: int, mixing: float = 0.0, seed: int = 0
           ) -> torch.Tensor:
    with torch.no_grad():
        return generator.sample_latents(n, generator=torch.Generator().manual_seed(seed),
                                        mixing=mixing)


@pytest.mark.parametrize("name", SSGAN_FAMILY)
def test_shared_sampling_puts_one_w_in_every_slot(name: str) -> None:
    generator = build(name)
    assert generator.config.latent_sampling == "shared"  # the paper's default
    w = sample(generator, 5)
    assert torch.equal(w, w[:, :1].expand_as(w))
    assert not torch.allclose(w[0], w[1])  # samples differ


@pytest.mark.parametrize("name", SSGAN_FAMILY)
def test_per_slot_sampling_draws_every_slot_apart(name: str) -> None:
    w = sample(build(name, "model.latent_sampling=per_slot"), 2, mixing=0.3)
    slots = w.shape[1]
    distinct = {tuple(w[0, s, :4].tolist()) for s in range(slots)}
    assert len(distinct) == slots


def test_style_mixing_follows_ssgan_mix_styles() -> None:
    """With mixing, the base code is w1 and each part's (shape, texture) is (w1, w1), (w1, w2)
    or (w2, w2), each of the three about a third of the time; never (w2, w1)."""
    generator = build("3dssgan")
    w = sample(generator, 400, mixing=1.0)
    w1 = w[:, 0]
    shape_is_w1 = (w[:, 1::2] == w1[:, None]).all(-1)  # (n, K)
    texture_is_w1 = (w[:, 2::2] == w1[:, None]).all(-1)
    w2 = torch.where(shape_is_w1[..., None], w[:, 2::2], w[:, 1::2])  # the other code
    assert ((w2 == w1[:, None]).all(-1) == (shape_is_w1 & texture_is_w1)).all()
    assert not (~shape_is_w1 & texture_is_w1).any()  # (w2, w1) never happens
    counts = torch.stack([(shape_is_w1 & texture_is_w1).float().mean(),
                          (shape_is_w1 & ~texture_is_w1).float().mean(),
                          (~shape_is_w1 & ~texture_is_w1).float().mean()])
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3), atol=0.03, rtol=0)
    for i in range(len(w)):  # w2 is one code per sample, shared by its parts
        others = w2[i][~(shape_is_w1[i] & texture_is_w1[i])]
        assert len({tuple(v.tolist()) for v in others}) <= 1


def test_mixing_probability_is_per_batch() -> None:
    generator = build("3dssgan")
    mixed = [not torch.equal(w, w[:, :1].expand_as(w))
             for w in (sample(generator, 4, mixing=0.3, seed=seed) for seed in range(300))]
    assert 0.22 < sum(mixed) / len(mixed) < 0.38
    assert torch.equal(sample(generator, 4, mixing=0.0, seed=3), sample(generator, 4, seed=3))


def test_a_snapshot_saved_before_shared_sampling_keeps_per_slot_sampling(tmp_path) -> None:
    """Saved configs without the keys added since get the values they were trained with."""
    from harness.config import config_to_dict
    from harness.runtime.checkpoint import load_generator

    config = config_to_dict(load_config(None, "smoke"))
    generator = build("3dssgan")
    old = {**config, "model": {k: v for k, v in config["model"].items()
                               if k not in ("latent_sampling", "absolute_depth")},
           "train": {k: v for k, v in config["train"].items()
                     if k not in ("style_mixing", "path_length_weight")}}
    (tmp_path / "checkpoints").mkdir()
    torch.save({"iteration": 3, "generator_ema": generator.state_dict(), "config": old},
               tmp_path / "checkpoints" / "network-snapshot-00000003.pt")
    loaded = load_generator(tmp_path).config
    assert loaded.model.latent_sampling == "per_slot"
    assert loaded.model.absolute_depth == "part_priors"
    assert loaded.train.style_mixing == 0 and loaded.train.path_length_weight == 0
    fresh = load_config(None, "smoke")
    assert fresh.model.latent_sampling == "shared" and fresh.train.style_mixing == 0.3


def test_ide3d_draws_its_two_codes_and_edits_texture_only() -> None:
    generator = build("ide3d")
    w = sample(generator, 3, mixing=1.0)  # mixing has no part codes to act on
    assert torch.equal(w[:, 1::2], w[:, :1].expand_as(w[:, 1::2]))  # w_s in every shape slot
    assert generator.part_edit == "texture"
    w_new = sample(generator, 3, seed=1)
    edited = generator.edit_part(w, 4, w_new)  # what="part": the model's localised edit
    assert (edited != w).any(-1).any(0).nonzero().flatten().tolist() == [2 + 2 * 4]
