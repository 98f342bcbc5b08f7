"""GAN losses and regularisers: L_SSGAN's parts and 3D-SSGAN's depth smoothness (Eqs. 12-13).

L_SSGAN (seasonSH/SemanticStyleGAN `train.py`) is the StyleGAN2 loss (non-saturating logistic,
lazy R1 on D, path-length on G), plus the mask consistency loss (weight 100). The weights and
intervals are applied by the training loop; these functions return unweighted terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.discriminator import IMAGE_INPUTS, MASK_INPUTS


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D loss: E[softplus(-D(x))] + E[softplus(D(G(z)))] (StyleGAN2, non-saturating)."""
    return d_loss_real(real_logits) + d_loss_fake(fake_logits)


def d_loss_real(real_logits: torch.Tensor) -> torch.Tensor:
    """The real half of `d_logistic_loss`: E[softplus(-D(x))]."""
    return F.softplus(-real_logits).mean()


def d_loss_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """The fake half of `d_logistic_loss`: E[softplus(D(G(z)))]."""
    return F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G loss: E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, inputs: Sequence[torch.Tensor],
               retain_graph: bool | None = None) -> list[torch.Tensor]:
    """Per input x: E_batch ||d sum(D) / d x||^2 (R1, Mescheder et al. 2018), one per input.

    `inputs` were fed to D with requires_grad; the graph is kept so the penalty trains D.
    SSGAN penalises image and mask separately, applied lazily every `interval` D steps as
        (gamma_image / 2 * r1_image + gamma_mask / 2 * r1_mask) * interval,
    with gamma_image = 10, gamma_mask = 1000, interval = 16.
    """
    grads = torch.autograd.grad(real_logits.sum(), list(inputs), create_graph=True,
                                retain_graph=retain_graph)
    return [g.pow(2).flatten(1).sum(1).mean() for g in grads]


def r1_backward(real_logits: torch.Tensor, inputs: Mapping[str, torch.Tensor],
                gamma_image: float, gamma_mask: float, scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate scale * (gamma_image / 2 * R1_image + gamma_mask / 2 * R1_mask) into D;
    return (R1_image, R1_mask), detached.

    `inputs` are D's keyword arguments on real data (models.discriminator), each fed with
    requires_grad. A branch sums `r1_penalty` over its inputs: image and mask alone for a
    single-resolution D; for a dual D, ||grad_I||^2 + ||grad_I_raw||^2 and likewise for the
    mask, as EG3D penalises `image` and `image_raw` together.

    The branches are differentiated one after the other from one forward graph: the same
    gradient as one backward of their sum, but only one branch's double-backward graph is in
    memory at a time (at 512 px that graph is most of a training step's peak memory).
    """
    unknown = set(inputs) - set(IMAGE_INPUTS + MASK_INPUTS)
    assert not unknown, f"discriminator inputs without an R1 branch: {sorted(unknown)}"
    branches = ((IMAGE_INPUTS, gamma_image), (MASK_INPUTS, gamma_mask))
    values = []
    for number, (keys, gamma) in enumerate(branches):
        tensors = [inputs[key] for key in keys if key in inputs]
        penalty = sum(r1_penalty(real_logits, tensors, retain_graph=True))
        last = number == len(branches) - 1
        if penalty.requires_grad:  # (a D linear in its inputs has a constant penalty)
            (scale * gamma / 2 * penalty).backward(retain_graph=not last)
        values.append(penalty.detach())
        del penalty  # frees this branch's double-backward graph before the next one
    return values[0], values[1]


def path_length_penalty(
    images: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor, decay: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2 path-length regulariser on G (SSGAN: weight 0.5, every 4 G steps).

    images (B, 3, H, W) generated from latents (B, S, w_dim) that require grad. Path length
    a = sqrt(mean_slots ||J^T y||^2) for y ~ N(0, I) / sqrt(HW); penalty E[(a - mu)^2] where mu
    is the running mean `mean_path_length` updated by `decay` (no gradient through mu).
    Returns (penalty, new mu).
    """
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), latents, create_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()  # (B,)
    mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    return (lengths - mean).pow(2).mean(), mean


def mask_consistency_loss(mask_coarse: torch.Tensor, mask_final: torch.Tensor) -> torch.Tensor:
    """SSGAN's mask loss: mean squared error between the coarse mask and the average-pooled
    final mask. mask_coarse (B, K, r, r), mask_final (B, K, R, R).

    As SSGAN's `train.py`: the high-resolution mask is downsampled to the coarse size with
    `adaptive_avg_pool2d` (not the coarse mask upsampled) and compared with an L2 distance on
    the values the discriminator sees (SSGAN: 2 * softmax - 1 for the coarse mask, the
    residual-refined mask for the final one; no softmax of the final mask). Pass both in the
    same space. Weight lambda_mask = 100 is applied by the caller.
    """
    pooled = F.adaptive_avg_pool2d(mask_final, mask_coarse.shape[-2:])  # (B, K, r, r)
    return (mask_coarse - pooled).pow(2).mean()


NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def depth_smoothness_loss(part_depth: torch.Tensor) -> torch.Tensor:
    """3D-SSGAN Eq. 13: L_ds = 1/A sum_k sum_(x,y) sum_(d1,d2) ||d_k(x,y) - d_k(x+d1,y+d2)||^2.

    part_depth (B, K, H, W). The 8 neighbours (d1, d2 in {-1, 0, 1}, not both 0) are summed as
    written, so each unordered pair of neighbours counts twice. Pixels whose neighbour falls
    outside the map contribute nothing (no padding), and the sum is still divided by
    A = 8 K H W as the paper writes. Averaged over the batch.
    """
    _, k, h, w = part_depth.shape
    total = part_depth.new_zeros(part_depth.shape[0])
    for dy, dx in NEIGHBOURS:
        centre = part_depth[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
        neighbour = part_depth[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
        total = total + (centre - neighbour).pow(2).sum(dim=(1, 2, 3))
    return (total / (8 * k * h * w)).mean()


@torch.no_grad()
def ema_update(ema_module: nn.Module, module: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * current for parameters; buffers are copied.

    SSGAN uses beta = 0.5 ** (32 / 10000) per step (rosinality's StyleGAN2 default).
    """
    for p_ema, p in zip(ema_module.parameters(), module.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema_module.buffers(), module.buffers(), strict=True):
        b_ema.copy_(b)
