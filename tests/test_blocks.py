"""Shared building blocks, local generators, render net and discriminator (tiny CPU shapes)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.config import load_config
from models.blocks import (
    ConstantInput,
    ConvLayer,
    FourierFeatures,
    MappingNetwork,
    MinibatchStd,
    ModulatedConv2d,
    ResBlock,
    StyledConv,
    ToRGB,
    Upsample,
    bias_leaky_relu,
    bias_leaky_relu_reference,
    channels_at,
    make_blur_kernel,
    upfirdn2d,
)
from models.discriminator import DualBranchDiscriminator
from models.local_generator import LocalGenerators
from models.render_net import RenderNet

K = 13  # parts, as the paper and both presets


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_channels_at_reproduces_ssgan_table() -> None:
    table = {res: channels_at(res, 32768, 512) for res in (4, 32, 64, 128, 256, 512)}
    assert table == {4: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64}


def test_upsample_keeps_a_constant_image_constant_away_from_the_border() -> None:
    out = Upsample()(torch.full((1, 2, 8, 8), 3.0))
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))


def test_mapping_network_updates_w_avg_only_in_training() -> None:
    mapping = MappingNetwork(8, 16, num_layers=3, w_avg_beta=0.9)
    z = torch.randn(5, 8)
    mapping.eval()
    w = mapping(z)
    assert w.shape == (5, 16) and torch.all(mapping.w_avg == 0)
    mapping.train()
    mapping(z)
    torch.testing.assert_close(mapping.w_avg, 0.1 * w.mean(0))


def test_modulated_conv_with_demodulation_keeps_unit_std() -> None:
    conv = ModulatedConv2d(128, 128, 3, style_dim=32)
    out = conv(torch.randn(8, 128, 16, 16), torch.randn(8, 32))
    std = out[..., 1:-1, 1:-1].std().item()  # interior: zero padding shrinks the border
    assert 0.85 < std < 1.15


@pytest.mark.parametrize("upsample", [False, True])
def test_grouped_modulated_conv_equals_one_sample_at_a_time(upsample: bool) -> None:
    conv = ModulatedConv2d(6, 5, 3, style_dim=7, upsample=upsample)
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 7)
    batched = conv(x, style)
    assert batched.shape == (3, 5, 16 if upsample else 8, 16 if upsample else 8)
    single = torch.cat([conv(x[i : i + 1], style[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)


def test_unmodulated_conv_is_a_weight_normalised_conv() -> None:
    conv = ModulatedConv2d(4, 6, 3, style_dim=None)
    x = torch.randn(2, 4, 5, 5)
    w = conv.weight[0]
    expected = F.conv2d(x, w / w.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt(), padding=1)
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_styled_conv_and_to_rgb_shapes() -> None:
    x, style = torch.randn(2, 8, 4, 4), torch.randn(2, 16)
    y = StyledConv(8, 12, 3, 16, upsample=True)(x, style)
    assert y.shape == (2, 12, 8, 8)
    to_rgb = ToRGB(12, 3, 16)
    skip = to_rgb(torch.randn(2, 12, 4, 4), style)
    assert to_rgb(y, style, skip=skip).shape == (2, 3, 8, 8)
    assert ConstantInput(8)(3).shape == (3, 8, 4, 4)


def test_fourier_features_values_and_resolution_independence() -> None:
    ff = FourierFeatures(16, max_frequency=8.0)  # 4 frequencies per axis: 1, 2, 4, 8
    coarse, fine = ff(2, 5, 9), ff(1, 9, 17)
    assert coarse.shape == (2, 16, 5, 9)
    u = torch.linspace(-1, 1, 9)
    torch.testing.assert_close(coarse[0, 0, 3], torch.sin(math.pi * u))  # x: sin, f = 1
    torch.testing.assert_close(coarse[0, 7, 2], torch.cos(8 * math.pi * u))  # x: cos, f = 8
    torch.testing.assert_close(coarse[0, 8, :, 4], torch.sin(math.pi * torch.linspace(-1, 1, 5)))
    # The same continuous field: the coarse grid is every other point of the fine one.
    torch.testing.assert_close(fine[0, :, ::2, ::2], coarse[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["3dssgan", "ssgan2d"])
def test_local_generators_take_the_configs_highest_fourier_frequency(model: str) -> None:
    default = load_config(None, "smoke", [f"model.name={model}"]).model
    lowered = load_config(None, "smoke", [f"model.name={model}",
                                          "model.fourier_max_frequency=2"]).model
    for config, top in ((default, 16.0), (lowered, 2.0)):
        freqs = LocalGenerators.from_config(config).fourier.freqs
        torch.testing.assert_close(freqs.max(), torch.tensor(math.pi * top))
        torch.testing.assert_close(freqs.min(), torch.tensor(math.pi))


def test_minibatch_std_and_discriminator_layers_shapes() -> None:
    x = torch.randn(6, 8, 4, 4)  # 6 is not a multiple of 4: groups of 3
    y = MinibatchStd(group_size=4)(x)
    assert y.shape == (6, 9, 4, 4)
    expected = x.reshape(3, 2, 8, 4, 4).std(0, unbiased=False).mean(dim=(1, 2, 3))
    torch.testing.assert_close(y[:2, 8, 0, 0], expected, atol=1e-4, rtol=0)
    assert ConvLayer(8, 5, 3, downsample=True)(x).shape == (6, 5, 2, 2)
    assert ResBlock(8, 5)(x).shape == (6, 5, 2, 2)


def local_generators(**overrides: object) -> LocalGenerators:
    """Tiny batched part generators."""
    settings = dict(
        num_parts=3, w_dim=8, hidden=6, fourier_channels=8, out_channels=5,
        base_layers=1, shape_layers=2, texture_layers=2,
    )  # fmt: skip
    settings.update(overrides)
    return LocalGenerators(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"coarse_mlp_layers": 2}, {"base_layers": 0}, {"base_free_parts": (0,)}],
)
def test_batched_local_generators_equal_the_per_part_loop(overrides: dict) -> None:
    gens = local_generators(**overrides)
    w = torch.randn(2, 7, 8)  # (B, 1 + 2K, w_dim)
    feature, depth, density = gens(w, resolution=6)
    assert feature.shape == (2, 3, 5, 6, 6) and depth.shape == density.shape == (2, 3, 6, 6)
    assert torch.all(density >= 0)
    for k in range(3):
        w_shape, w_texture = w[:, 1 + 2 * k], w[:, 2 + 2 * k]
        w_base = w_shape if k in overrides.get("base_free_parts", ()) else w[:, 0]
        f_k, d_k, s_k = gens.part(k)(w_base, w_shape, w_texture, resolution=6)
        torch.testing.assert_close(feature[:, k], f_k, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(depth[:, k], d_k[:, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(density[:, k], s_k[:, 0], rtol=1e-4, atol=1e-5)


def test_channels_last_features_are_the_same_values_stored_for_the_lifting() -> None:
    gens = local_generators()
    w = torch.randn(2, 7, 8, requires_grad=True)
    feature, depth, _ = gens(w, resolution=6)
    last, depth_last, _ = gens(w, resolution=6, channels_last=True)
    assert last.shape == feature.shape and last.permute(0, 1, 3, 4, 2).is_contiguous()
    torch.testing.assert_close(last, feature)
    torch.testing.assert_close(depth_last, depth)
    probe = torch.randn_like(feature)
    grads = [torch.autograd.grad((f * probe).sum(), w)[0] for f in (feature, last)]
    torch.testing.assert_close(grads[1], grads[0])


def test_a_texture_edit_changes_only_that_parts_features() -> None:
    gens = local_generators()
    w = torch.randn(1, 7, 8)
    edited = w.clone()
    edited[:, 2 + 2 * 1] = torch.randn(8)  # texture code of part 1
    (f0, d0, s0), (f1, d1, s1) = gens(w, 4), gens(edited, 4)
    torch.testing.assert_close(d0, d1)  # depth and density come from the shape branch
    torch.testing.assert_close(s0, s1)
    torch.testing.assert_close(f0[:, [0, 2]], f1[:, [0, 2]])
    assert not torch.allclose(f0[:, 1], f1[:, 1])


def test_local_generators_reject_a_wrong_slot_count() -> None:
    with pytest.raises(ValueError, match="expected 7 latent slots"):
        local_generators()(torch.randn(1, 5, 8), 4)


def test_local_generators_at_paper_scale() -> None:
    gens = LocalGenerators(K, 512, hidden=64, fourier_channels=64, out_channels=256)
    with torch.no_grad():
        feature, depth, density = gens(torch.randn(1, 1 + 2 * K, 512), resolution=64)
    assert feature.shape == (1, K, 256, 64, 64) and depth.shape == density.shape == (1, K, 64, 64)


@pytest.mark.parametrize(
    ("r", "out", "min_res"), [(16, 32, None), (16, 16, None), (16, 64, 8), (8, 32, 4)]
)
def test_render_net_shapes(r: int, out: int, min_res: int | None) -> None:
    net = RenderNet(32, K, r, out, channel_base=1024, channel_max=64, min_resolution=min_res)
    image, mask = net(torch.randn(2, 32, r, r))
    assert image.shape == (2, 3, out, out) and mask.shape == (2, K, out, out)


def test_render_net_fixed_noise_is_deterministic_and_unmodulated() -> None:
    net = RenderNet(16, K, 8, 16, channel_base=256, channel_max=32)
    assert not any("modulation" in name for name, _ in net.named_parameters())
    with torch.no_grad():
        net.blocks[1].conv0.noise.weight.fill_(1.0)  # make the noise matter
    feature = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(net(feature, randomize_noise=False), net(feature, False))
    assert not torch.allclose(net(feature)[0], net(feature)[0])


def test_render_net_paper_widths() -> None:
    net = RenderNet(256, K, 64, 512)
    widths = [(b.conv0.conv.in_channels, b.conv0.conv.out_channels) for b in net.blocks]
    assert widths == [(256, 512), (512, 256), (256, 128), (128, 64)]


def test_render_net_rejects_bad_resolutions() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RenderNet(8, K, 12, 24)
    with pytest.raises(ValueError, match="min_resolution <= in_resolution"):
        RenderNet(8, K, 16, 8)


@pytest.mark.parametrize(("resolution", "merge"), [(8, 4), (32, 4), (32, 16)])
def test_discriminator_gradient_reaches_both_branches(resolution: int, merge: int) -> None:
    disc = DualBranchDiscriminator(
        resolution, K, channel_base=512, channel_max=32, merge_resolution=merge
    )
    image = torch.randn(4, 3, resolution, resolution, requires_grad=True)
    mask = torch.randn(4, K, resolution, resolution, requires_grad=True)
    logits = disc(image, mask)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    assert image.grad.abs().sum() > 0 and mask.grad.abs().sum() > 0
    for tower in (disc.image_tower, disc.mask_tower):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def test_discriminator_rejects_small_resolution() -> None:
    with pytest.raises(ValueError, match=">= 8"):
        DualBranchDiscriminator(4, K)


@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_bias_leaky_relu_equals_the_reference_to_second_order(with_bias: bool) -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = (x, bias) if with_bias else (x,)
    torch.testing.assert_close(bias_leaky_relu(x, bias), bias_leaky_relu_reference(x, bias))
    assert torch.autograd.gradcheck(lambda *a: bias_leaky_relu(*a), inputs)
    assert torch.autograd.gradgradcheck(lambda *a: bias_leaky_relu(*a), inputs)
    # R1-style: the gradient of a squared input-gradient norm matches the reference
    weight = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    grads = []
    for activation in (bias_leaky_relu, bias_leaky_relu_reference):
        (g,) = torch.autograd.grad((activation(x * x, bias) * weight).sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(g.square().sum(), x))
    torch.testing.assert_close(grads[0], grads[1])


def test_upfirdn2d_symmetric_padding_equals_explicit_padding() -> None:
    x = torch.randn(2, 3, 9, 9)
    kernel = make_blur_kernel()
    for pad, down in (((1, 1), 2), ((2, 2), 1), ((0, 0), 2)):
        explicit = F.conv2d(F.pad(x, [*pad, *pad]),
                            kernel.flip([0, 1])[None, None].expand(3, 1, 4, 4), stride=down,
                            groups=3)
        torch.testing.assert_close(upfirdn2d(x, kernel, down=down, pad=pad), explicit)
