"""3D-SSGAN: shapes, the part-control API, and that every ablation switch does what it says."""

from __future__ import annotations

import pytest
import torch

from harness.config import load_config
from harness.errors import UserError
from harness.runtime.samples import view_cameras
from models.generator import part_slots
from models.registry import get_model
from models.ssgan3d import FACE_BASE, PART_NAMES, SSGAN3DGenerator

EYES, MOUTH, HAIR = PART_NAMES.index("eyes"), PART_NAMES.index("mouth"), PART_NAMES.index("hair")
BACKGROUND = PART_NAMES.index("background")


def build(*overrides: str) -> SSGAN3DGenerator:
    config = load_config(None, "smoke", list(overrides))
    torch.manual_seed(0)
    return get_model("3dssgan").build_generator(config.model).eval()


def render(generator: SSGAN3DGenerator, w: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    cam2world, intrinsic = view_cameras(torch.device("cpu"))
    n = w.shape[0]
    with torch.no_grad():
        return generator(w, cam2world[1:2].expand(n, 4, 4), intrinsic[1:2].expand(n, 3, 3),
                         **kwargs)


def latents(generator: SSGAN3DGenerator, n: int = 2, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return generator.sample_latents(n, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_discriminator() -> None:
    config = load_config(None, "smoke")
    spec = get_model("3dssgan")
    generator, discriminator = spec.build_generator(config.model), spec.build_discriminator(
        config.model)
    w = generator.sample_latents(2)
    assert w.shape == (2, 1 + 2 * 13, config.model.w_dim)
    out = render(generator.eval(), w)
    r, big = config.model.render_resolution, config.model.resolution
    assert out["image"].shape == (2, 3, big, big)
    assert out["mask"].shape == (2, 13, big, big)
    assert out["mask_coarse"].shape == (2, 13, r, r)
    assert out["depth"].shape == (2, 1, r, r)
    assert discriminator(out["image"], out["mask"]).shape == (2, 1)


def test_fast_chunked_and_reference_lifting_paths_agree_in_the_model() -> None:
    fast, reference = build(), build("model.lifting_path=reference")
    chunked = build("model.ray_chunk=7")
    w = latents(fast)
    a, b, c = render(fast, w), render(reference, w), render(chunked, w)
    for key in ("image", "mask", "mask_coarse", "depth"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a[key], c[key], rtol=1e-6, atol=1e-6)
    with pytest.raises(UserError, match="ray_chunk applies to the fast lifting path"):
        build("model.lifting_path=reference", "model.ray_chunk=7")


def test_texture_edit_leaves_geometry_and_mask_unchanged() -> None:
    generator = build()
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    edited = generator.edit_part(w, MOUTH, w_new, what="texture")
    assert torch.equal(edited[:, part_slots(MOUTH, "texture")], w_new[:, part_slots(MOUTH,
                                                                                   "texture")])
    changed = (edited != w).any(-1).any(0).nonzero().flatten().tolist()
    assert changed == part_slots(MOUTH, "texture")
    a, b = render(generator, w), render(generator, edited)
    torch.testing.assert_close(a["mask_coarse"], b["mask_coarse"])  # density, depth untouched
    torch.testing.assert_close(a["depth"], b["depth"])
    assert not torch.allclose(a["image"], b["image"])


def test_shape_edit_changes_only_that_parts_maps() -> None:
    generator = build()
    w, w_new = latents(generator, seed=0), latents(generator, seed=1)
    with torch.no_grad():
        a = generator.part_maps(w)
        b = generator.part_maps(generator.edit_part(w, HAIR, w_new, what="shape"))
    others = [k for k in range(13) if k != HAIR]
    torch.testing.assert_close(a["sigma"][:, others], b["sigma"][:, others])
    assert not torch.allclose(a["sigma"][:, HAIR], b["sigma"][:, HAIR])


def test_relative_depth_switch() -> None:
    """Relative parts follow the face base's depth (Eq. 7); with the switch off they do not."""
    w = None
    for relative, follows in ((True, True), (False, False)):
        generator = build(f"model.relative_depth={str(relative).lower()}")
        w = latents(generator) if w is None else w
        w_face = latents(generator, seed=5)
        with torch.no_grad():
            a = generator.part_maps(w)
            b = generator.part_maps(generator.edit_part(w, FACE_BASE, w_face, what="shape"))
        face_moved = not torch.allclose(a["d_hat"][:, FACE_BASE], b["d_hat"][:, FACE_BASE])
        for part in (EYES, HAIR):  # every part but face and background is relative (Sec. 3.2)
            moved = not torch.allclose(a["d_hat"][:, part], b["d_hat"][:, part])
            assert face_moved and moved == follows
        torch.testing.assert_close(  # the background's depth is absolute in both arms
            a["d_hat"][:, BACKGROUND], b["d_hat"][:, BACKGROUND])


def test_relative_parts_default_to_every_part_but_face_and_background() -> None:
    config = load_config(None, "smoke").model
    assert set(config.relative_parts) == set(PART_NAMES) - {"face", "background"}
    only_eyes = build("model.relative_parts=[eyes]")
    w, w_face = latents(only_eyes), latents(only_eyes, seed=5)
    with torch.no_grad():
        a = only_eyes.part_maps(w)
        b = only_eyes.part_maps(only_eyes.edit_part(w, FACE_BASE, w_face, what="shape"))
    assert not torch.allclose(a["d_hat"][:, EYES], b["d_hat"][:, EYES])
    torch.testing.assert_close(a["d_hat"][:, HAIR], b["d_hat"][:, HAIR])  # left out: absolute
    with pytest.raises(UserError, match="not facial parts"):
        build("model.relative_parts=[face]")


def test_depth_arms_differ_only_in_the_reference_depth() -> None:
    """Table 3's two arms share the bound, start and smoothness term: for every part but face
    and background, d_hat(relative) - d_hat(absolute) = d_face - the face base's prior depth."""
    relative, absolute = build(), build("model.relative_depth=false")
    absolute.load_state_dict(relative.state_dict())
    w = latents(relative)
    with torch.no_grad():
        a, b = relative.part_maps(w), absolute.part_maps(w)
    top = relative.config.volume_depth - 1
    shift = a["d_hat"][:, FACE_BASE] - 0.7 * top  # (B, H, W): d_faceBase - its prior
    others = [k for k, name in enumerate(PART_NAMES) if name not in ("face", "background")]
    for k in others:
        torch.testing.assert_close(a["d_hat"][:, k] - b["d_hat"][:, k], shift)
    torch.testing.assert_close(a["part_depth"], b["part_depth"])  # Eq. 13 reads the same maps
    offset = a["part_depth"][:, others]
    assert offset.abs().max() <= relative.config.relative_depth_range * top  # one tanh bound


def test_part_priors_give_the_earlier_absolute_parameterisation() -> None:
    from models.ssgan3d import DEPTH_PRIOR

    generator = build("model.relative_depth=false", "model.absolute_depth=part_priors")
    w = latents(generator)
    with torch.no_grad():
        maps = generator.part_maps(w)
        _, raw, _ = generator.local(w, generator.config.render_resolution)
    top = generator.config.volume_depth - 1
    prior = torch.logit(torch.tensor(DEPTH_PRIOR["nose"]))
    nose = PART_NAMES.index("nose")
    torch.testing.assert_close(maps["d_hat"][:, nose], top * torch.sigmoid(raw[:, nose] + prior))


def test_mask_nerf_weights_switch_and_warmup() -> None:
    full, ablated = build(), build("model.mask_nerf_weights=false")
    warmup = full.config.mask_warmup_iterations
    assert full.mask_weights_at(0) == "uniform" and full.mask_weights_at(warmup) == "nerf"
    assert full.mask_weights_at(None) == "nerf"
    assert ablated.mask_weights_at(None) == "uniform" == ablated.mask_weights_at(10**6)
    ablated.load_state_dict(full.state_dict())
    w = latents(full)
    a, b = render(full, w), render(ablated, w)
    torch.testing.assert_close(a["depth"], b["depth"])  # same geometry and weights...
    assert not torch.allclose(a["mask_coarse"], b["mask_coarse"])  # ...different masks


def test_feature_fusion_switch_changes_the_features_only() -> None:
    summed, weighted = build(), build("model.feature_fusion=density")
    weighted.load_state_dict(summed.state_dict())
    w = latents(summed)
    a, b = render(summed, w), render(weighted, w)
    torch.testing.assert_close(a["depth"], b["depth"])  # densities and weights as before...
    torch.testing.assert_close(a["mask_coarse"], b["mask_coarse"])
    assert not torch.allclose(a["image"], b["image"])  # ...the features fused differently


@pytest.mark.parametrize("setting", ["model.lifting.alpha=2", "model.lifting.function=inverse_abs",
                                     "model.lifting.function=inverse_square"])
def test_lifting_function_switch_changes_the_render(setting: str) -> None:
    base, other = build(), build(setting)
    other.load_state_dict(base.state_dict())
    w = latents(base)
    assert not torch.allclose(render(base, w)["image"], render(other, w)["image"])


def test_progressive_generation_keeps_only_active_parts() -> None:
    generator = build()
    w = latents(generator)
    only_background = render(generator, w, active_parts=[0])
    assert (only_background["mask_coarse"].argmax(1) == 0).all()
    partial = render(generator, w, active_parts=[0, FACE_BASE, HAIR])
    assert set(partial["mask_coarse"].argmax(1).unique().tolist()) <= {0, FACE_BASE, HAIR}


def test_part_interpolation_endpoints() -> None:
    generator = build()
    w_a, w_b = latents(generator, seed=0), latents(generator, seed=1)
    assert torch.equal(generator.interpolate_parts(w_a, w_b, 0.0, parts=[MOUTH]), w_a)
    end = generator.interpolate_parts(w_a, w_b, 1.0, parts=[MOUTH], what="shape")
    slots = part_slots(MOUTH, "shape")
    assert torch.equal(end[:, slots], w_b[:, slots])
    others = [s for s in range(w_a.shape[1]) if s not in slots]
    assert torch.equal(end[:, others], w_a[:, others])
    torch.testing.assert_close(generator.interpolate_parts(w_a, w_b, 0.5), (w_a + w_b) / 2)


def test_depth_smoothness_weight_and_ray_samples() -> None:
    generator = build("model.depth_smoothness_weight=0")
    out = render(generator, latents(generator))
    assert generator.regularizers(out)["depth_smoothness"] == 0
    weighted = build()
    assert weighted.regularizers(out)["depth_smoothness"] > 0
    cfg = weighted.config
    assert (cfg.ray_samples_train, cfg.ray_samples_test) == (6, 8)
    paper = load_config(None, "paper").model
    assert (paper.ray_samples_train, paper.ray_samples_test) == (12, 36)
    assert (paper.render_resolution, paper.volume_depth, paper.feature_channels) == (64, 32, 256)


def test_depth_guided_sampling_renders_few_samples_and_approaches_the_uniform_render() -> None:
    # 32 samples: enough for the coarse pass's weights to place the guided samples well (with
    # the smoke preset's 8 the quantiles of a piecewise-constant weight are too coarse)
    uniform = build("model.ray_samples_test=32")
    n_test = uniform.config.ray_samples_test
    guided = build("model.test_sampling=depth_guided", f"model.depth_guided_coarse={n_test}",
                   "model.depth_guided_samples=3")
    dense = build("model.test_sampling=depth_guided", f"model.depth_guided_coarse={n_test}",
                  "model.depth_guided_samples=256")
    w = latents(uniform)
    reference, narrow, fine = render(uniform, w), render(guided, w), render(dense, w)
    cam2world, intrinsic = view_cameras(torch.device("cpu"))
    with torch.no_grad():
        rendered = guided.render_maps(guided.part_maps(w), cam2world[1:2].expand(2, 4, 4),
                                      intrinsic[1:2].expand(2, 3, 3))
    assert rendered.weights.shape[-1] == 3  # only 3 samples rendered per ray
    spacing = 2.0 / n_test  # (FAR - NEAR) / N head units
    for key in ("image", "mask", "depth"):  # more guided samples: closer to the uniform render
        error = (narrow[key] - reference[key]).abs().mean()
        assert (fine[key] - reference[key]).abs().mean() < error
    assert (fine["depth"] - reference["depth"]).abs().mean() < 0.1 * spacing
    assert (narrow["depth"] - reference["depth"]).abs().mean() < spacing
    guided.train()  # training always samples the whole ray
    assert not guided.uses_depth_guided_sampling(iteration=None)
    guided.eval()
    assert not guided.uses_depth_guided_sampling(iteration=0)  # warm-up: uniform mask weights
    assert guided.uses_depth_guided_sampling(iteration=None)


def test_a_snapshot_with_retired_depth_guided_keys_still_loads(tmp_path) -> None:
    from harness.config import config_to_dict
    from harness.runtime.checkpoint import load_generator

    config = config_to_dict(load_config(None, "smoke"))
    generator = build()
    old = {**config, "model": {**config["model"], "depth_guided_window": 8,
                               "depth_guided_stride": 2}}  # keys of the earlier sampling
    (tmp_path / "checkpoints").mkdir()
    torch.save({"iteration": 3, "generator_ema": generator.state_dict(), "config": old},
               tmp_path / "checkpoints" / "network-snapshot-00000003.pt")
    loaded = load_generator(tmp_path)
    assert loaded.iteration == 3 and not hasattr(loaded.config.model, "depth_guided_window")
    misspelt = {**config, "model": {**config["model"], "depth_guided_windw": 8}}
    torch.save({"iteration": 4, "generator_ema": generator.state_dict(), "config": misspelt},
               tmp_path / "checkpoints" / "network-snapshot-00000004.pt")
    with pytest.raises(Exception, match="unknown key 'model.depth_guided_windw'"):
        load_generator(tmp_path)  # only retired keys are dropped
