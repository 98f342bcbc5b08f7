"""Activation checkpointing (`checkpoint_resolution`) changes memory, never the gradients."""

from __future__ import annotations

import torch

from models.discriminator import DualBranchDiscriminator
from models.losses import r1_penalty
from models.render_net import RenderNet


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _saved_bytes(forward) -> int:
    """Bytes of the tensors autograd saves for backward while `forward()` runs."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return total


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12, msg=name)


def test_discriminator_r1_and_loss_gradients_equal_with_recompute() -> None:
    torch.manual_seed(0)
    plain = DualBranchDiscriminator(32, 13, channel_base=256, channel_max=16).double()
    recomputed = DualBranchDiscriminator(32, 13, channel_base=256, channel_max=16,
                                         checkpoint_resolution=16).double()
    recomputed.load_state_dict(plain.state_dict())
    image = torch.randn(4, 3, 32, 32, dtype=torch.double)
    mask = torch.randn(4, 13, 32, 32, dtype=torch.double)
    grads = []
    for net in (plain, recomputed):
        inputs = [image.clone().requires_grad_(True), mask.clone().requires_grad_(True)]
        logits = net(*inputs)
        r1_image, r1_mask = r1_penalty(logits, inputs)  # double backward through the blocks
        (logits.sum() + r1_image + 10 * r1_mask).backward()
        grads.append({**_grads(net), "image": inputs[0].grad, "mask": inputs[1].grad})
    _assert_same(*grads)
    image.requires_grad_(True)
    saved = [_saved_bytes(lambda net=net: net(image, mask)) for net in (plain, recomputed)]
    assert saved[1] < saved[0] / 2  # the 32 and 16 px blocks keep nothing but their inputs


def test_render_net_gradients_equal_with_recompute() -> None:
    torch.manual_seed(0)
    plain = RenderNet(8, 13, 8, 32, channel_base=256, channel_max=16).double()
    recomputed = RenderNet(8, 13, 8, 32, channel_base=256, channel_max=16,
                           checkpoint_resolution=16).double()
    recomputed.load_state_dict(plain.state_dict())
    assert recomputed.recompute_at == [False, True, True]
    feature = torch.randn(2, 8, 8, 8, dtype=torch.double)
    grads = []
    for net in (plain, recomputed):
        torch.manual_seed(1)  # the noise injection draws: recompute must replay the same
        x = feature.clone().requires_grad_(True)
        image, mask = net(x, randomize_noise=True)
        (image.square().sum() + mask.sin().sum()).backward()
        grads.append({**_grads(net), "feature": x.grad})
    _assert_same(*grads)
