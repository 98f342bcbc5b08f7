"""The baselines of the zoo (CNeRF, IDE-3D, SemanticStyleGAN): outputs, editing, presets, loop."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.config import PRESET_NAMES, load_config
from harness.runtime.samples import view_cameras
from harness.training.loop import training_loop
from models import registry
from models.cnerf import CNeRFGenerator
from models.discriminator import IMAGE_INPUTS, MASK_INPUTS, discriminator_inputs
from models.film_siren import PartFiLMSiren
from models.generator import part_slots
from models.ide3d import IDE3DGenerator, texture_groups
from models.parts import PART_NAMES
from models.registry import get_model
from models.rendering import render_map
from models.ssgan2d import SSGAN2DGenerator
from models.triplane import TriplaneGenerator, sample_triplane

BASELINES = ("cnerf", "ide3d", "ssgan2d")
K = len(PART_NAMES)
MOUTH, HAIR, FACE = PART_NAMES.index("mouth"), PART_NAMES.index("hair"), PART_NAMES.index("face")


def build(name: str, *overrides: str, seed: int = 0) -> torch.nn.Module:
    config = load_config(None, "smoke", [f"model.name={name}", *overrides])
    torch.manual_seed(seed)
    return get_model(name).build_generator(config.model).eval()


def cameras(n: int, view: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    cam2world, intrinsic = view_cameras(torch.device("cpu"))
    return cam2world[view : view + 1].expand(n, 4, 4), intrinsic[view : view + 1].expand(n, 3, 3)


def render(generator: torch.nn.Module, w: torch.Tensor, view: int = 1, **kwargs
           ) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return generator(w, *cameras(w.shape[0], view), **kwargs)


def latents(generator: torch.nn.Module, n: int = 2, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return generator.sample_latents(n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- shared by every baseline


@pytest.mark.parametrize("name", BASELINES)
def test_outputs_and_discriminator_shapes(name: str) -> None:
    config = load_config(None, "smoke", [f"model.name={name}"])
    spec = get_model(name)
    generator = spec.build_generator(config.model).eval()
    discriminator = spec.build_discriminator(config.model)
    w = latents(generator)
    assert w.shape == (2, 1 + 2 * K, config.model.w_dim)
    out = render(generator, w)
    r, big = config.model.render_resolution, config.model.resolution
    assert out["image"].shape == (2, 3, big, big)
    assert out["mask"].shape == (2, K, big, big)
    assert out["mask_coarse"].shape == (2, K, r, r)
    expected = {"image", "mask", "mask_coarse"}
    if spec.three_d_aware:
        expected |= {"depth"}
        assert out["depth"].shape == (2, 1, r, r)
    if name == "ide3d":  # its dual discriminator reads the low-resolution image
        assert out["image_lr"].shape == (2, 3, r, r)
    if name == "cnerf":  # no loss reads a low-resolution colour image in the shared loop
        assert "image_lr" not in out
    assert expected <= set(out)
    # The coarse mask is 2 * (a distribution over the K classes) - 1 at every pixel.
    torch.testing.assert_close(((out["mask_coarse"] + 1) / 2).sum(1), torch.ones(2, r, r))
    assert torch.isfinite(out["image"]).all() and torch.isfinite(out["mask"]).all()
    assert discriminator(**discriminator_inputs(out)).shape == (2, 1)


@pytest.mark.parametrize("name", BASELINES)
def test_presets_resolve_and_registry_attributes(name: str) -> None:
    spec = get_model(name)
    for preset in PRESET_NAMES:
        config = load_config(None, preset, [f"model.name={name}"])
        assert isinstance(config.model, spec.config_class) and config.model.name == name
        assert config.model.num_parts == K
    cpu = load_config(None, "cpu", [f"model.name={name}"]).model
    assert cpu.resolution == 32
    assert load_config(None, "paper", [f"model.name={name}"]).model.resolution == 512
    assert spec.disentanglement == ("weak" if name == "ide3d" else "strong")
    assert spec.three_d_aware == (name != "ssgan2d")


def test_paper_presets_carry_the_papers_settings() -> None:
    cnerf = load_config(None, "paper", ["model.name=cnerf"]).model
    assert (cnerf.width, cnerf.shape_layers, cnerf.texture_layers) == (128, 3, 2)
    assert (cnerf.render_resolution, cnerf.ray_samples_train, cnerf.w_dim) == (64, 24, 256)
    ide3d = load_config(None, "paper", ["model.name=ide3d"]).model
    assert (ide3d.plane_resolution, ide3d.plane_channels, ide3d.semantic_resolution) == (
        256, 32, 64)
    assert (ide3d.decoder_hidden, ide3d.feature_channels, ide3d.render_resolution) == (64, 32, 128)
    ssgan = load_config(None, "paper", ["model.name=ssgan2d"]).model
    assert (ssgan.render_resolution, ssgan.min_feature_resolution, ssgan.feature_channels) == (
        64, 16, 512)
    assert (ssgan.base_layers, ssgan.shape_layers, ssgan.texture_layers) == (2, 4, 4)


@pytest.mark.parametrize("name", BASELINES)
def test_a_few_steps_of_the_shared_loop(name: str, tmp_path: Path, smoke_overrides) -> None:
    config = load_config(None, "smoke", [
        *smoke_overrides, f"model.name={name}", "train.iterations=2", "train.log_every=1",
        "train.checkpoint_every=2", "train.sample_every=2"])
    result = training_loop(config, tmp_path / "run", progress=False)
    assert result.iteration == 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
             .splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2]
    assert all(math.isfinite(value) for line in lines for value in line.values())
    assert (tmp_path / "run" / "samples" / "iter-00000002.png").is_file()
    torch.manual_seed(config.train.seed)
    fresh = get_model(name).build_generator(config.model).state_dict()
    trained = result.generator.state_dict()
    assert any(not torch.equal(fresh[key], trained[key]) for key in fresh)


@pytest.mark.parametrize("name", ["cnerf", "ssgan2d"])
def test_compositional_edits_swap_only_that_parts_slots(name: str) -> None:
    generator = build(name)
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    for what in ("shape", "texture", "both"):
        edited = generator.edit_part(w, MOUTH, w_new, what=what)
        changed = (edited != w).any(-1).any(0).nonzero().flatten().tolist()
        assert changed == part_slots(MOUTH, what)


@pytest.mark.parametrize("name", ["cnerf", "ssgan2d"])
def test_progressive_generation_keeps_only_active_parts(name: str) -> None:
    generator = build(name)
    partial = render(generator, latents(generator), active_parts=[0, FACE, HAIR])
    assert set(partial["mask_coarse"].argmax(1).unique().tolist()) <= {0, FACE, HAIR}


def test_render_map_lays_rays_out_row_major() -> None:
    values = torch.randn(2, 4 * 3, 5)  # 2x2 pixels, 3 samples per ray, 5 channels
    w = torch.zeros(2, 4, 3)
    w[..., 1] = 1  # every ray stops at its second sample
    image = render_map(w, values, 2)
    assert image.shape == (2, 5, 2, 2)
    torch.testing.assert_close(image[:, :, 1, 0], values[:, 2 * 3 + 1])  # ray 2 = row 1, col 0


# ---------------------------------------------------------------- CNeRF


def test_film_siren_matches_the_formula_for_each_part() -> None:
    torch.manual_seed(0)
    layer = PartFiLMSiren(3, 4, 5, w_dim=6)
    x, w = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 6)
    out = layer(x, w)
    k = 1
    gamma = 15 * (w[:, k] @ layer.gamma.weight[k].T + layer.gamma.bias[k]) + 30
    beta = 0.25 * (w[:, k] @ layer.beta.weight[k].T + layer.beta.bias[k])
    h = x[:, k] @ layer.linear.weight[k].T + layer.linear.bias[k]
    torch.testing.assert_close(out[:, k], torch.sin(gamma[:, None] * h + beta[:, None]))


def test_cnerf_density_from_sphere_plus_residuals() -> None:
    generator = build("cnerf")
    assert isinstance(generator, CNeRFGenerator)
    w = latents(generator)
    points = torch.rand(2, 50, 3) * 2 - 1
    with torch.no_grad():
        parts = generator.fields(points[:, None], w[:, 1::2], w[:, 2::2])
        field = generator.compose(points, w)
        sigma = generator.density(field["sdf"])
    sdf = points.norm(dim=-1) - generator.config.sphere_radius + parts["sdf"].sum(1)
    torch.testing.assert_close(field["sdf"], sdf)  # s = s_sphere + sum_k Delta s_k
    beta = generator.config.beta_init
    torch.testing.assert_close(sigma, torch.sigmoid(-sdf / beta) / beta)  # StyleSDF Eq. 2
    torch.testing.assert_close(field["mask"], torch.softmax(parts["mask"], dim=1).transpose(1, 2))


def test_cnerf_texture_edit_changes_only_that_parts_field() -> None:
    generator = build("cnerf")
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    points = torch.rand(2, 1, 40, 3) * 2 - 1
    edited = generator.edit_part(w, MOUTH, w_new, what="texture")
    with torch.no_grad():
        a = generator.fields(points, w[:, 1::2], w[:, 2::2])
        b = generator.fields(points, edited[:, 1::2], edited[:, 2::2])
    others = [k for k in range(K) if k != MOUTH]
    for key in ("mask", "sdf", "feature"):
        torch.testing.assert_close(a[key][:, others], b[key][:, others])
    torch.testing.assert_close(a["mask"], b["mask"])  # masks come from the shape layers
    assert not torch.allclose(a["feature"][:, MOUTH], b["feature"][:, MOUTH])
    assert not torch.allclose(render(generator, w)["image"], render(generator, edited)["image"])


def test_cnerf_regularizers_in_training_only() -> None:
    generator = build("cnerf").train()
    out = generator(latents(generator), *cameras(2))
    losses = generator.regularizers(out)
    assert set(losses) == {"eikonal", "min_surface"} and all(v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert generator.fields.shape[0].linear.weight.grad is not None
    assert "sdf" not in render(generator.eval(), latents(generator))
    unweighted = build("cnerf", "model.eikonal_weight=0").train()
    assert "eikonal" not in unweighted.regularizers(unweighted(latents(unweighted), *cameras(2)))


# ---------------------------------------------------------------- IDE-3D


def test_ide3d_latent_layout_and_holistic_shape() -> None:
    generator = build("ide3d")
    w = latents(generator)
    shape, texture = w[:, 0], w[:, 2]
    assert torch.equal(w[:, 1::2], shape[:, None].expand(2, K, -1))
    assert torch.equal(w[:, 2::2], texture[:, None].expand(2, K, -1))
    assert not torch.equal(shape, texture)
    w_new = latents(generator, seed=1)
    edited = generator.edit_part(w, MOUTH, w_new, what="texture")
    assert (edited != w).any(-1).any(0).nonzero().flatten().tolist() == [2 + 2 * MOUTH]
    reshaped = generator.edit_part(w, MOUTH, w_new, what="shape")
    assert torch.equal(reshaped[:, 0::2][:, 1:], w[:, 2::2])  # textures kept
    assert torch.equal(reshaped[:, 1::2], w_new[:, 1::2]) and torch.equal(reshaped[:, 0],
                                                                         w_new[:, 0])
    with pytest.raises(ValueError, match="holistic"):
        render(generator, w, active_parts=[0, FACE])


def test_texture_groups() -> None:
    codes = torch.zeros(2, 5, 3)
    assert texture_groups(codes) == [[0, 1, 2, 3, 4]]
    codes[1, 3] = 1  # differs in one sample only: still its own group
    codes[:, 1] = 2
    assert texture_groups(codes) == [[0, 2, 4], [1], [3]]


def opaque_ide3d() -> IDE3DGenerator:
    """A fresh IDE-3D whose density is high everywhere, so each ray stops at its first sample
    and the pixel's class is that point's label (an untrained field is semi-transparent)."""
    generator = build("ide3d")
    with torch.no_grad():
        generator.semantic_decoder[2].bias[0] += 20
    return generator


def test_ide3d_regional_texture_edit_recolours_only_the_part() -> None:
    generator = opaque_ide3d()
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    a = render(generator, w)
    labels = a["mask_coarse"].argmax(1)  # (B, r, r)
    counts = torch.bincount(labels.flatten(), minlength=K)
    part = min((k for k in range(K) if counts[k] > 10), key=lambda k: counts[k])
    edited = generator.edit_part(w, part, w_new, what="texture")
    b = render(generator, edited)
    torch.testing.assert_close(a["mask_coarse"], b["mask_coarse"])  # geometry untouched
    torch.testing.assert_close(a["depth"], b["depth"])
    inside = labels == part
    low = (a["image_lr"] - b["image_lr"]).abs().mean(1)
    assert low[inside].mean() > 0.01 > 10 * low[~inside].mean()
    region = F.interpolate(inside[:, None].float(), size=a["image"].shape[-2:])[:, 0] > 0.5
    high = (a["image"] - b["image"]).abs().mean(1)
    assert high[region].mean() > 5 * high[~region].mean()


def test_ide3d_colour_field_selects_by_label_exactly() -> None:
    generator = build("ide3d")
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    textures = generator.edit_part(w, MOUTH, w_new, what="texture")[:, 2::2]
    points = torch.rand(2, 64, 3) * 2 - 1
    labels = torch.randint(K, (2, 64))
    with torch.no_grad():
        _, shared = generator.triplane.semantic(w[:, 0], randomize_noise=False)
        old = generator.colour_field(shared, w[:, 2::2], points, labels, False)
        new = generator.colour_field(shared, textures, points, labels, False)
    outside = labels != MOUTH
    torch.testing.assert_close(new[outside], old[outside])
    assert not torch.allclose(new[~outside], old[~outside])


def test_ide3d_density_regularizer_and_low_high_discriminator() -> None:
    generator = build("ide3d").train()
    out = generator(latents(generator), *cameras(2))
    loss = generator.regularizers(out)["density"]
    assert loss > 0
    loss.backward()
    assert generator.semantic_decoder[0].weight.grad is not None
    off = build("ide3d", "model.density_reg_weight=0").train()
    assert off.regularizers(off(latents(off), *cameras(2)))["density"] == 0


def test_ide3d_dual_discriminator_reads_the_raw_render_and_trains_it() -> None:
    generator = build("ide3d").train()
    out = generator(latents(generator), *cameras(2))
    inputs = discriminator_inputs(out)
    assert inputs["raw_image"] is out["image_lr"] and inputs["raw_mask"] is out["mask_coarse"]
    config = load_config(None, "smoke", ["model.name=ide3d"])
    torch.manual_seed(0)
    discriminator = get_model("ide3d").build_discriminator(config.model)
    # D reads the low-resolution render: the generator's loss reaches I_l through it, not
    # only through the up-sampled residual path of I_h.
    (grad,) = torch.autograd.grad(discriminator(**inputs).sum(), out["raw_image"],
                                  retain_graph=True)
    assert grad.abs().sum() > 0
    r = config.model.render_resolution
    resized = {**inputs, "raw_image": F.adaptive_avg_pool2d(out["image"], r)}
    assert not torch.allclose(discriminator(**inputs), discriminator(**resized))
    # A real pair: its raw halves are the pair area-downsampled to the render resolution.
    assert config.model.resolution == 2 * r  # 2x2 blocks below
    image, mask = torch.rand(2, 3, 2 * r, 2 * r) * 2 - 1, torch.rand(2, K, 2 * r, 2 * r) * 2 - 1
    real = get_model("ide3d").real_inputs(config.model, image, mask)
    assert set(real) == set(inputs)
    torch.testing.assert_close(real["raw_image"][:, :, 1, 2], image[:, :, 2:4, 4:6].mean((2, 3)))
    torch.testing.assert_close(real["raw_mask"][:, :, 3, 0], mask[:, :, 6:8, 0:2].mean((2, 3)))
    with pytest.raises(TypeError):  # no silent fallback to a resized high-resolution input
        discriminator(out["image"], out["mask"])


def test_the_loop_gives_ide3d_d_the_raw_render_and_r1_on_every_real_input(
        tmp_path: Path, smoke_overrides, monkeypatch) -> None:
    spec = get_model("ide3d")
    renders: list[dict[str, torch.Tensor]] = []  # every generator output of the run
    calls: list[dict[str, torch.Tensor]] = []  # every discriminator input of the run

    def build_generator(config):
        generator = spec.build_generator(config)
        generator.register_forward_hook(lambda module, args, out: renders.append(out))
        return generator

    def build_discriminator(config):
        discriminator = spec.build_discriminator(config)
        discriminator.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append(kwargs), with_kwargs=True)
        return discriminator

    monkeypatch.setitem(registry._MODELS, "ide3d", dataclasses.replace(
        spec, build_generator=build_generator, build_discriminator=build_discriminator))
    config = load_config(None, "smoke", [*smoke_overrides, "model.name=ide3d",
                                         "train.iterations=1"])
    training_loop(config, tmp_path / "run", progress=False)
    # Iteration 0: D(fake), D(real), D(real) for lazy R1, then D(fake) in the G step.
    assert len(calls) == 4 and all(set(call) == set(IMAGE_INPUTS + MASK_INPUTS) for call in calls)
    fakes, reals = [calls[0], calls[3]], calls[1:3]
    r = config.model.render_resolution
    for call in fakes:  # the generator's own low-resolution render, not a resized output
        out = next(out for out in renders if out["image"] is call["image"])
        assert call["raw_image"] is out["image_lr"] and call["raw_mask"] is out["mask_coarse"]
        assert not torch.allclose(call["raw_image"], F.adaptive_avg_pool2d(call["image"], r))
    assert calls[3]["raw_image"].requires_grad  # the G step trains the render through D
    for call in reals:
        torch.testing.assert_close(call["raw_image"], F.adaptive_avg_pool2d(call["image"], r))
        torch.testing.assert_close(call["raw_mask"], F.adaptive_avg_pool2d(call["mask"], r))
    assert all(value.requires_grad for value in reals[1].values())  # R1 on what D sees


def test_triplane_sampling_is_bilinear_and_generator_shapes() -> None:
    size = 8
    ramp = (torch.arange(size) + 0.5) / size * 2 - 1  # pixel centres along u
    planes = ramp.expand(size, size)[None, None, None].repeat(1, 3, 1, 1, 1)  # value = u
    points = torch.rand(1, 20, 3) * 1.5 - 0.75  # inside the outermost pixel centres
    expected = (points[..., 0] + points[..., 0] + points[..., 2]) / 3  # u of xy, xz, zy
    torch.testing.assert_close(sample_triplane(planes, points)[..., 0], expected)
    torch.testing.assert_close(sample_triplane(planes, 2 * points, extent=2.0)[..., 0], expected)
    outside = torch.tensor([[[5.0, 0.0, -5.0]]])  # beyond the box: the edge values
    edge = ramp[-1].item(), ramp[-1].item(), ramp[0].item()
    torch.testing.assert_close(sample_triplane(planes, outside)[0, 0, 0],
                               torch.tensor(sum(edge) / 3))
    generator = TriplaneGenerator(16, semantic_resolution=8, plane_resolution=32,
                                  semantic_channels=4, plane_channels=6, channel_base=128,
                                  channel_max=16)
    semantic, shared = generator.semantic(torch.randn(2, 16))
    assert semantic.shape == (2, 3, 4, 8, 8) and shared.shape[-1] == 8
    assert generator.texture(shared, torch.randn(2, 16)).shape == (2, 3, 6, 32, 32)


# ---------------------------------------------------------------- SemanticStyleGAN


def test_ssgan2d_ignores_the_camera_and_composes_by_pseudo_depth() -> None:
    generator = build("ssgan2d")
    assert isinstance(generator, SSGAN2DGenerator)
    w = latents(generator)
    left, right = render(generator, w, view=0), render(generator, w, view=2)
    for key in ("image", "mask", "mask_coarse"):
        torch.testing.assert_close(left[key], right[key])
    with torch.no_grad():
        _, depth, _ = generator.local(w, generator.config.render_resolution)
    depth[:, 0] = 0  # SSGAN: no pseudo-depth for the background
    torch.testing.assert_close(left["mask_coarse"], 2 * torch.softmax(depth, dim=1) - 1)


def test_ssgan2d_texture_edit_keeps_the_mask_and_transparent_parts_add_on_top() -> None:
    generator = build("ssgan2d")
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    a = render(generator, w)
    b = render(generator, generator.edit_part(w, HAIR, w_new, what="texture"))
    torch.testing.assert_close(a["mask_coarse"], b["mask_coarse"])
    assert not torch.allclose(a["image"], b["image"])
    seg = torch.softmax(torch.randn(1, K, 4, 4), dim=1)
    feature = torch.randn(1, K, 2, 4, 4)
    glasses = PART_NAMES.index("eyeglasses")
    alone = torch.zeros_like(feature)
    alone[:, glasses] = feature[:, glasses]
    opaque = feature - alone
    composed = generator.composite(feature, seg)
    # Linear in the features; the transparent part's share is its raw mask weight ...
    torch.testing.assert_close(composed - generator.composite(opaque, seg),
                               seg[:, glasses, None] * feature[:, glasses])
    # ... and the opaque weights sum to one without it.
    ones = torch.ones(1, K, 1, 4, 4)
    ones[:, [glasses, PART_NAMES.index("earrings")]] = 0
    torch.testing.assert_close(generator.composite(ones, seg), torch.ones(1, 1, 4, 4))
