"""One iteration of the shared GAN recipe (SemanticStyleGAN's), and the networks it updates.

SemanticStyleGAN's `train.py`: latents with style mixing (probability 0.3), the logistic loss
with lazy R1 on D, the non-saturating loss with the mask loss on G, lazy path-length
regularisation on G (weight 0.5 every 4 steps on half the batch), and the EMA of G.

The training loop (harness.training.loop) and the model benchmark (harness.bench.models)
both build their networks with `build_gan` and train with `gan_step`, so what the benchmark
times and measures is the step the loop takes.

The GPU speed switches (harness.training.speed) act here: G's and D's forward passes run
under `train.precision`'s autocast and return float32 (`_generate`, `_discriminate`), so the
losses are float32; the R1 and path-length passes run float32 and eager (`_path_length_step`,
`eager_regularization`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from harness.config import ExperimentConfig
from harness.runtime.cameras import CameraSampler
from harness.training.distributed import DistInfo, average_buffers, average_gradients
from harness.training.speed import (
    apply_speed_switches,
    autocast,
    begin_step,
    eager_regularization,
)
from models.discriminator import discriminator_inputs
from models.losses import (
    d_loss_fake,
    d_loss_real,
    ema_update,
    g_nonsaturating_loss,
    mask_consistency_loss,
    path_length_penalty,
    r1_backward,
)
from models.precision import to_float32
from models.registry import get_model


@dataclass
class Gan:
    """A model's networks and optimisers: G, D, the EMA of G, Adam for G and for D."""

    config: ExperimentConfig
    generator: nn.Module
    discriminator: nn.Module
    generator_ema: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    # running mean of G's path lengths (StyleGAN2's pl_mean; training state, checkpointed)
    path_length_mean: torch.Tensor

    def ema_beta(self) -> float:
        """Per-step EMA decay: half-life of `train.ema_kimg` thousand images (StyleGAN2)."""
        train = self.config.train
        return 0.5 ** (train.batch_size / (train.ema_kimg * 1000))


def build_gan(config: ExperimentConfig, device: torch.device) -> Gan:
    """`config.model`'s networks (seeded by `train.seed`) with the recipe's optimisers.

    Adam with betas (beta1, beta2); D's learning rate and betas are rescaled for lazy R1
    every `d_reg_every` steps (StyleGAN2: ratio = c / (c + 1)). The speed switches
    (`train.channels_last`, `train.compile`) apply to G and D, not to the EMA of G.
    """
    spec, train = get_model(config.model.name), config.train
    torch.manual_seed(train.seed)
    generator = spec.build_generator(config.model).to(device)
    discriminator = spec.build_discriminator(config.model).to(device)
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    apply_speed_switches(generator, discriminator, train)
    ratio = train.d_reg_every / (train.d_reg_every + 1)
    g_opt = torch.optim.Adam(generator.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=train.lr * ratio,
                             betas=(train.beta1**ratio, train.beta2**ratio))
    return Gan(config, generator, discriminator, generator_ema, g_opt, d_opt,
               torch.zeros((), device=device))


def gan_step(
    gan: Gan,
    real_image: torch.Tensor,  # (B, 3, R, R) in [-1, 1]
    real_mask: torch.Tensor,  # (B, K, R, R) one-hot in {-1, 1}
    fake_cameras: CameraSampler,
    rng: torch.Generator,  # latents and cameras of the generated images
    iteration: int | None,  # passed to G (warm-ups); None: a trained model's step
    regularize: bool,  # take the lazy R1 step on both D branches
    info: DistInfo | None = None,  # the job's ranks, whose gradients are averaged
    path_length: bool = False,  # take the lazy path-length step on G
) -> dict[str, torch.Tensor]:
    """One D step (logistic loss, optional R1) and one G step (non-saturating loss, mask
    consistency, the model's own regularisers), the optional path-length step, then the EMA
    update; the detached losses."""
    g, d, train = gan.generator, gan.discriminator, gan.config.train
    info = info or DistInfo()
    batch = real_image.shape[0]
    device = real_image.device
    real = get_model(gan.config.model.name).real_inputs(gan.config.model, real_image, real_mask)
    g.train()
    begin_step(train)

    # Discriminator step: real (image, one-hot mask) against generated pairs, each given to D
    # as the model declares (models.discriminator; IDE-3D adds low-resolution copies).
    d.requires_grad_(True)
    with torch.no_grad():
        fake = _generate(gan, batch, fake_cameras, rng, iteration, device)
    # The two halves of the logistic loss backward one at a time: the same gradient as
    # backward of their sum, with one discriminator graph in memory instead of two.
    gan.d_opt.zero_grad(set_to_none=True)
    d_fake = d_loss_fake(_discriminate(gan, discriminator_inputs(fake)))
    d_fake.backward()
    del fake
    d_real = d_loss_real(_discriminate(gan, real))
    d_real.backward()
    losses = {"d_loss": (d_real + d_fake).detach()}
    if regularize:  # float32 and eager: R1 differentiates D's input gradients
        real = {key: value.detach().requires_grad_(True) for key, value in real.items()}
        with eager_regularization(train):
            real_logits = d(**real)
        losses["r1_image"], losses["r1_mask"] = r1_backward(
            real_logits, real, train.r1_gamma_image, train.r1_gamma_mask,
            scale=train.d_reg_every)
    average_gradients(d, info)
    _clip(d, train.max_grad_norm)
    gan.d_opt.step()

    # Generator step.
    d.requires_grad_(False)
    fake = _generate(gan, batch, fake_cameras, rng, iteration, device)
    g_adv = g_nonsaturating_loss(_discriminate(gan, discriminator_inputs(fake)))
    g_mask = mask_consistency_loss(fake["mask_coarse"], fake["mask"])
    extra = g.regularizers(fake) if hasattr(g, "regularizers") else {}
    g_loss = g_adv + train.mask_consistency_weight * g_mask + sum(extra.values())
    gan.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    average_gradients(g, info)
    _clip(g, train.max_grad_norm)
    gan.g_opt.step()
    losses.update({"g_loss": g_loss.detach(), "g_adv": g_adv.detach(), "g_mask": g_mask.detach(),
                   **{k: v.detach() for k, v in extra.items()}})
    del fake, g_loss, g_adv, g_mask, extra
    if path_length:
        losses["path_length"] = _path_length_step(gan, fake_cameras, rng, iteration, info, batch)
    average_buffers(g, info)
    ema_update(gan.generator_ema, g, gan.ema_beta())
    return losses


def _generate(gan: Gan, count: int, fake_cameras: CameraSampler, rng: torch.Generator,
              iteration: int | None, device: torch.device) -> dict[str, torch.Tensor]:
    """G's output for `count` fresh latents (style mixing as trained) at fake cameras: G's
    forward pass under `train.precision`'s autocast (the mapping network's outside: its w_avg
    is a float32 running mean), every tensor returned in float32."""
    g, train = gan.generator, gan.config.train
    w = g.sample_latents(count, generator=rng, mixing=train.style_mixing)
    with autocast(train, device):
        fake = g(w, *fake_cameras(count, rng, device), iteration=iteration)
    return {key: to_float32(value) for key, value in fake.items()}


def _discriminate(gan: Gan, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """D's logits (B, 1) on `inputs`: the forward pass under `train.precision`'s autocast, the
    logits in float32."""
    with autocast(gan.config.train, next(iter(inputs.values())).device):
        return to_float32(gan.discriminator(**inputs))


def _path_length_step(gan: Gan, fake_cameras: CameraSampler, rng: torch.Generator,
                      iteration: int | None, info: DistInfo, batch: int) -> torch.Tensor:
    """StyleGAN2's lazy path-length step on G (weight x interval), as SSGAN's `train.py`: on
    batch / shrink images, gradients with respect to the W+ latents; the penalty, detached.
    Float32 and eager whatever the speed switches: it differentiates G's gradients."""
    g, train = gan.generator, gan.config.train
    count = max(1, batch // train.path_length_batch_shrink)
    device = gan.path_length_mean.device
    with torch.no_grad():
        w = g.sample_latents(count, generator=rng, mixing=train.style_mixing)
    w.requires_grad_(True)
    with eager_regularization(train):
        fake = g(w, *fake_cameras(count, rng, device), iteration=iteration)
    penalty, gan.path_length_mean = path_length_penalty(fake["image"], w, gan.path_length_mean)
    gan.g_opt.zero_grad(set_to_none=True)
    (train.path_length_weight * train.path_length_every * penalty).backward()
    average_gradients(g, info)
    _clip(g, train.max_grad_norm)
    gan.g_opt.step()
    return penalty.detach()


def _clip(module: nn.Module, max_norm: float | None) -> None:
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
