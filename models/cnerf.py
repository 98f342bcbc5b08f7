"""CNeRF (Ma et al., AAAI 2023): a compositional NeRF with one 3D generator per semantic part.

Pipeline (CNeRF Fig. 2; TianxiangMa/CNeRF `volume_renderer.py`, `model.py`):
    W+ latents -> per part k a FiLM-SIREN MLP on the 3D sample points: `shape_layers` layers
    modulated by W_s^k, then `texture_layers` layers modulated by W_t^k (CNeRF: 3 + 2, width
    128). Heads: a mask logit m_k after the shape layers; an SDF residual Delta s_k and a feature
    vector f_k after the texture layers, as CNeRF's code reads them (so a texture swap also
    moves that part's SDF residual, as in CNeRF).
    -> SDF  s(x) = s_sphere(x) + sum_k Delta s_k(x), with s_sphere(x) = |x| - r a fixed sphere
       (CNeRF's frozen, sphere-pretrained `init_network`, here in closed form)
    -> density as StyleSDF (Or-El et al. 2022, Eq. 2): sigma(x) = sigmoid(-s(x)/beta) / beta,
       beta learned (initially 0.1)
    -> composition of features across parts by the part masks
    -> NeRF rendering (models.rendering) of features and masks at render_resolution:
       each part's 2D mask is sum_i w_i m_k(x_i) (CNeRF's `mask2d`)
    -> SSGAN's render net (models.render_net) up-samples the features to the image and predicts
       the mask residual (CNeRF's second stage is a StyleGAN2 decoder with a mask branch).

Composition: the part masks at a point are softmax_k(m_k) (a convex combination). CNeRF's code
multiplies by the raw mask outputs instead; we use the softmax because (1) it is what makes a
rendered part mask a distribution over the K classes (sum_k = sum_i w_i = 1), the form every
model of the zoo gives the discriminator (2 * mask - 1), and (2) with raw masks a part's
features can leak everywhere with any magnitude, while with the softmax a part only contributes
where its mask wins, which keeps a latent swap local (what Table 1 measures).

Differences from CNeRF, each for the shared harness: no view-direction input to the mask and feature
heads (view-independent fields; the harness measures view consistency); the renderer is the zoo's
(uniform stratified samples between NEAR and FAR, opaque last sample, the camera conventions of
models.camera); there is no W^base (slot 0 is sampled and ignored: CNeRF has no shared code); the
two stages (renderer at 64x64, then the up-sampler) train end to end in the shared loop, so CNeRF's
low-resolution colour head (which trains its first stage) has no loss here and is left out. Part
edits are latent swaps in 3D-SSGAN's slot layout (models.generator).

Regularisers as StyleSDF / CNeRF (`options.py`): eikonal (lambda 0.1) and minimal surface
(lambda 0.001, beta 100), declared by `regularizers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from models.blocks import MappingNetwork
from models.camera import pixel_rays
from models.config import (
    PartLatentConfig,
    check_part_count,
    check_powers_of_two,
    check_render_resolution,
)
from models.discriminator import build_dual_branch_discriminator
from models.film_siren import PartDense, PartFiLMSiren
from models.generator import PartGenerator
from models.parts import PART_NAMES
from models.precision import float32
from models.registry import ModelSpec, register_model
from models.render_net import build_render_net
from models.rendering import expected_depth, nerf_weights, ray_depths, ray_points, render_map


class CNeRFConfig(PartLatentConfig):
    """CNeRF; the defaults are the paper's settings (TianxiangMa/CNeRF `options.py`)."""

    name: Literal["cnerf"] = "cnerf"
    render_resolution: int = 64  # pixels, side of the volume-rendered feature map
    z_dim: int = Field(256, ge=1)  # size of z per latent slot (CNeRF style_dim)
    w_dim: int = Field(256, ge=1)  # size of W
    mapping_layers: int = Field(3, ge=1)  # CNeRF's renderer mapping network has 3 layers
    width: int = Field(128, ge=1)  # hidden units of each part's FiLM-SIREN MLP
    shape_layers: int = Field(3, ge=1)  # FiLM-SIREN layers reading W_s^k
    texture_layers: int = Field(2, ge=1)  # FiLM-SIREN layers reading W_t^k
    feature_channels: int = Field(128, ge=3)  # C of f_k (CNeRF: the MLP width)
    sphere_radius: float = Field(0.6, gt=0, lt=1)  # head units, radius of the initial SDF sphere
    beta_init: float = Field(0.1, gt=0)  # head units, initial StyleSDF sharpness beta
    ray_samples_train: int = Field(24, ge=2)  # N per ray in training (CNeRF N_samples)
    ray_samples_test: int = Field(24, ge=2)  # N per ray at test time
    eikonal_weight: float = Field(0.1, ge=0)  # lambda of E(||grad s|| - 1)^2 (StyleSDF)
    min_surface_weight: float = Field(0.001, ge=0)  # lambda of E exp(-100 |s|) (StyleSDF)
    min_surface_beta: float = Field(100.0, gt=0)  # per head unit, in exp(-beta_s |s|)
    render_channel_base: int = Field(32768, ge=1)  # render net width at res s: base / s ...
    render_channel_max: int = Field(512, ge=1)  # ... capped at this
    disc_channel_base: int = Field(32768, ge=1)  # discriminator width at res s: base / s ...
    disc_channel_max: int = Field(512, ge=1)  # ... capped at this

    @model_validator(mode="after")
    def _check(self) -> CNeRFConfig:
        check_powers_of_two(self, ("resolution", "render_resolution"), minimum=8)
        check_render_resolution(self)
        check_part_count(self.num_parts, PART_NAMES)
        return self


class PartFields(nn.Module):
    """The K per-part FiLM-SIREN generators of CNeRF, evaluated together on the same points."""

    def __init__(self, num_parts: int, w_dim: int, width: int, feature_channels: int,
                 shape_layers: int, texture_layers: int) -> None:
        super().__init__()
        self.shape = nn.ModuleList(
            PartFiLMSiren(num_parts, 3 if i == 0 else width, width, w_dim, first=i == 0)
            for i in range(shape_layers))
        self.texture = nn.ModuleList(
            PartFiLMSiren(num_parts, width, width, w_dim) for _ in range(texture_layers))
        self.to_mask = PartDense(num_parts, width, 1, "siren")
        self.to_sdf = PartDense(num_parts, width, 1, "siren")
        nn.init.zeros_(self.to_sdf.bias)  # the initial SDF is the sphere (CNeRF: pretrained)
        self.to_feature = PartDense(num_parts, width, feature_channels, "kaiming")

    @float32  # sin(30 (W x + b)) of bfloat16 products would be noise (models.precision)
    def forward(self, points: torch.Tensor, w_shape: torch.Tensor, w_texture: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """points (B, 1, P, 3), codes (B, K, w_dim) each -> per-part values at the points:
        mask logit and SDF residual (B, K, P), feature (B, K, P, C)."""
        x = points
        for layer in self.shape:
            x = layer(x, w_shape)  # (B, K, P, width)
        mask = self.to_mask(x)[..., 0]  # (B, K, P) m_k, from the shape branch
        for layer in self.texture:
            x = layer(x, w_texture)
        feature = self.to_feature(x)  # (B, K, P, C) f_k
        return {"mask": mask, "sdf": self.to_sdf(x)[..., 0], "feature": feature}


class CNeRFGenerator(PartGenerator):
    """W+ latents and a camera -> image, mask, coarse mask, depth."""

    def __init__(self, config: CNeRFConfig):
        super().__init__()
        self.config = config
        self.num_parts, self.z_dim, self.w_dim = config.num_parts, config.z_dim, config.w_dim
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.fields = PartFields(config.num_parts, config.w_dim, config.width,
                                 config.feature_channels, config.shape_layers,
                                 config.texture_layers)
        self.beta = nn.Parameter(torch.tensor(config.beta_init))  # StyleSDF's sigmoid_beta
        self.render_net = build_render_net(config)

    def density(self, sdf: torch.Tensor) -> torch.Tensor:
        """StyleSDF Eq. 2: sigma = sigmoid(-s / beta) / beta (beta kept above 1e-3)."""
        beta = self.beta.clamp_min(1e-3)
        return torch.sigmoid(-sdf / beta) / beta

    def compose(self, points: torch.Tensor, w: torch.Tensor,
                active_parts: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The composed field at points (B, P, 3): sdf (B, P), mask (B, P, K) (softmax over
        parts), feature (B, P, C)."""
        parts = self.fields(points[:, None], w[:, 1::2], w[:, 2::2])
        mask_logits, residual = parts["mask"], parts["sdf"]  # (B, K, P) each
        if active_parts is not None:
            keep = torch.zeros(self.num_parts, dtype=torch.bool, device=w.device)
            keep[list(active_parts)] = True
            mask_logits = mask_logits.masked_fill(~keep[:, None], float("-inf"))
            residual = residual * keep[:, None]
        mask = torch.softmax(mask_logits, dim=1)  # (B, K, P)
        sdf = points.norm(dim=-1) - self.config.sphere_radius + residual.sum(1)  # (B, P)
        feature = torch.einsum("bkp,bkpc->bpc", mask, parts["feature"])  # (B, P, C)
        return {"sdf": sdf, "mask": mask.transpose(1, 2), "feature": feature}

    def forward(
        self,
        w: torch.Tensor,
        cam2world: torch.Tensor,
        intrinsics: torch.Tensor,
        iteration: int | None = None,
        active_parts: Sequence[int] | None = None,
        num_ray_samples: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render latents w (B, 1+2K, w_dim) at cameras (B, 4, 4), (B, 3, 3).

        `iteration` is accepted for the shared loop and unused; `active_parts` keeps only those
        parts (their masks compete, the other parts' SDF residuals are dropped). In training
        with gradients on, the output also holds the SDF at the samples and its gradient for
        the regularisers.
        """
        cfg = self.config
        batch, r = w.shape[0], cfg.render_resolution
        samples = num_ray_samples or (cfg.ray_samples_train if self.training
                                      else cfg.ray_samples_test)
        origins, directions = pixel_rays(cam2world, intrinsics, r)  # (B, r*r, 3) each
        t = ray_depths(batch, r * r, samples, stratified=self.training, device=w.device,
                       dtype=w.dtype)  # (B, r*r, N)
        points = ray_points(origins, directions, t).reshape(batch, -1, 3)  # (B, r*r*N, 3)
        regularize = self.training and torch.is_grad_enabled()
        if regularize and cfg.eikonal_weight > 0:
            points.requires_grad_(True)
        field = self.compose(points, w, active_parts)
        weights = nerf_weights(self.density(field["sdf"]).view(batch, r * r, samples), t)
        feature = render_map(weights, field["feature"], r)  # (B, C, r, r)
        mask_coarse = 2 * render_map(weights, field["mask"], r) - 1  # sum_i w_i m_k in [-1, 1]
        image, mask_residual = self.render_net(feature, randomize_noise=self.training)
        mask = F.interpolate(mask_coarse, size=image.shape[-2:], mode="bilinear",
                             align_corners=False) + mask_residual
        out = {
            "image": image,  # (B, 3, R, R)
            "mask": mask,  # (B, K, R, R)
            "mask_coarse": mask_coarse,  # (B, K, r, r)
            "depth": expected_depth(weights, t).reshape(batch, 1, r, r),  # head units
        }
        if regularize:
            out["sdf"] = field["sdf"]  # (B, P) at the ray samples
            if cfg.eikonal_weight > 0:
                (out["sdf_gradient"],) = torch.autograd.grad(  # (B, P, 3)
                    field["sdf"].sum(), points, create_graph=True)
        return out

    def regularizers(self, output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted StyleSDF regularisers on a training output: eikonal and minimal surface."""
        cfg = self.config
        losses = {"min_surface": cfg.min_surface_weight
                  * torch.exp(-cfg.min_surface_beta * output["sdf"].abs()).mean()}
        if "sdf_gradient" in output:
            norm = output["sdf_gradient"].norm(dim=-1)
            losses["eikonal"] = cfg.eikonal_weight * (norm - 1).pow(2).mean()
        return losses


PRESETS = {
    "smoke": dict(resolution=32, render_resolution=16, z_dim=32, w_dim=32, mapping_layers=2,
                  width=16, shape_layers=2, texture_layers=1, feature_channels=16,
                  ray_samples_train=6, ray_samples_test=8, render_channel_base=256,
                  render_channel_max=16, disc_channel_base=256, disc_channel_max=32),
    # K MLPs on every sample are CNeRF's cost: width 16 and 8 samples per ray keep a step
    # on a par with 3D-SSGAN's cpu step (measured with harness.bench.models).
    "cpu": dict(resolution=32, render_resolution=16, z_dim=64, w_dim=64, mapping_layers=3,
                width=16, shape_layers=3, texture_layers=2, feature_channels=32,
                ray_samples_train=8, ray_samples_test=16, render_channel_base=1024,
                render_channel_max=64, disc_channel_base=1024, disc_channel_max=64),
    # CNeRF's settings (`options.py`, `scripts/train_Full.sh`: --size 512); the harness's
    # paper preset adds SSGAN's training settings (batch 4 as CNeRF's per-GPU batch).
    "paper": dict(checkpoint_resolution=128),  # activation checkpointing: fits 12 GB at batch 4
}

register_model(ModelSpec(
    name="cnerf", config_class=CNeRFConfig, build_generator=CNeRFGenerator,
    build_discriminator=build_dual_branch_discriminator, presets=PRESETS, disentanglement="strong",
    three_d_aware=True,
    description="CNeRF: one FiLM-SIREN SDF generator per part, composed by part masks",
))
