"""IDE-3D (Sun et al., SIGGRAPH Asia 2022): a holistic semantic tri-plane GAN (papers/002).

Pipeline (IDE-3D Sec. 3.1, Fig. 2, supplement B):
    shape code w_s, texture code w_t -> multi-head StyleGAN2 generator (models.triplane):
      semantic tri-plane f^s from the shallow layers (w_s), texture tri-plane f^t from three
      deep heads (w_t), one per plane
    -> dual MLP decoders (Eq. 1), one hidden layer of 64 units with softplus each:
      Phi_s: f^s_x -> density sigma and K semantic logits s; Phi_t: f^t_x -> colour feature c
      (32 channels, the first three are RGB), as EG3D's decoder (sigma = softplus(raw - 1),
      c = sigmoid(raw) * 1.002 - 0.001)
    -> volume rendering (models.rendering) of the colour features C_l and of the semantic mask
      S_l = sum_i w_i softmax(s(x_i)) at `render_resolution`
    -> 2D up-sampler with a segmentation branch (the zoo's render net): I_h = up(I_l) + R(C_l),
      S_h = up(S_l) + Delta S (the up-sampler predicts residuals of the low-resolution inputs)
    -> dual discriminator on (I_h ++ up(I_l), S_h ++ up(S_l)) (`LowHighDiscriminator`, Eq. 2):
      the generator returns I_l, S_l as `raw_image`, `raw_mask` for it; real pairs get their
      copies at the render resolution from `real_inputs`
    -> density regularisation (Eq. 3), declared by `regularizers`.

Latent layout and part editing. IDE-3D is holistic: one shape code and one texture code. The
W+ tensor keeps the zoo's layout (1 + 2K slots, models.generator) with these meanings:
    slot 0           w_s, the shape code (the odd slots 1 + 2k hold copies of it; forward
                     reads slot 0 only)
    slot 2 + 2k      the texture code applied at the 3D points whose semantic label is k
`sample_latents` draws one w_s and one w_t and writes w_t into every texture slot, which renders
as IDE-3D does. `edit_part(w, k, w_new, "texture")` replaces slot 2 + 2k only: forward then
labels every sample point with argmax_k s_k(x) (Phi_s, shape only) and queries the colour of the
points labelled k from the tri-plane of the new code, the others from the old one -- IDE-3D's
region-level texture editing (Sec. 4.3: "a 3D style mask which only select[s] 3D points
belonging to these semantic classes"). Forward generates one texture tri-plane per distinct
texture code, so the unedited case costs one. IDE-3D has no part-level shape code (its local
shape edits go through mask drawing and GAN inversion, not reproduced here): a "shape" edit of
any part replaces w_s, i.e. the whole geometry, which is the weak disentanglement of Table 2.

Differences from IDE-3D, each for the shared harness: the up-sampler is SSGAN's unmodulated
render net (so a regional texture edit reaches it only through the rendered features of the
region); no pose conditioning of the mapping network (the zoo's latents carry no camera); no
importance sampling (`ray_samples_*` uniform stratified samples, 96 = EG3D's 48 + 48); the
discriminator is the shared dual-branch one (towers summed) fed the concatenations; real images
and masks are area-downsampled to the render resolution (EG3D: an antialiased resize).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from models.blocks import EqualLinear, MappingNetwork
from models.camera import pixel_rays
from models.config import (
    ModelConfig,
    check_part_count,
    check_powers_of_two,
    check_render_resolution,
)
from models.discriminator import build_dual_branch_discriminator
from models.generator import PartGenerator, part_slots, slot_count
from models.parts import PART_NAMES
from models.registry import ModelSpec, register_model
from models.render_net import build_render_net
from models.rendering import expected_depth, nerf_weights, ray_depths, ray_points, render_map
from models.triplane import TriplaneGenerator, sample_triplane


class IDE3DConfig(ModelConfig):
    """IDE-3D; the defaults are the paper's settings (supplement B, EG3D where it defers)."""

    name: Literal["ide3d"] = "ide3d"
    render_resolution: int = 128  # pixels, neural rendering size (second stage; 64 before)
    z_dim: int = Field(512, ge=1)  # size of z per code
    w_dim: int = Field(512, ge=1)  # size of W
    mapping_layers: int = Field(8, ge=1)  # depth of the mapping network
    semantic_resolution: int = 64  # side of the shared feature map and semantic planes (supp. B)
    plane_resolution: int = 256  # side of each texture plane (supp. B: 256 x 256 x 32)
    semantic_channels: int = Field(32, ge=1)  # C_s per semantic plane
    plane_channels: int = Field(32, ge=1)  # C_t per texture plane (supp. B)
    # head units, half side of the tri-plane box: FAR * tan(FOV / 2) = 1.25 holds the whole
    # frontal view frustum (models.camera), so no ray of it leaves the planes before FAR
    triplane_extent: float = Field(1.25, gt=0)
    triplane_channel_base: int = Field(32768, ge=1)  # G_feat width at res s: base / s ...
    triplane_channel_max: int = Field(512, ge=1)  # ... capped at this (StyleGAN2 config F)
    decoder_hidden: int = Field(64, ge=1)  # hidden units of Phi_s and Phi_t (supp. B)
    feature_channels: int = Field(32, ge=3)  # colour feature c (supp. B: 32; first 3 RGB)
    ray_samples_train: int = Field(96, ge=2)  # N per ray in training
    ray_samples_test: int = Field(96, ge=2)  # N per ray at test time
    density_reg_weight: float = Field(0.25, ge=0)  # lambda_density, Eq. 4 (EG3D's value)
    density_reg_points: int = Field(1000, ge=1)  # points per sample in Eq. 3 (EG3D)
    density_reg_distance: float = Field(0.004, gt=0)  # head units, std of epsilon in Eq. 3
    render_channel_base: int = Field(32768, ge=1)  # up-sampler width at res s: base / s ...
    render_channel_max: int = Field(512, ge=1)  # ... capped at this
    disc_channel_base: int = Field(32768, ge=1)  # discriminator width at res s: base / s ...
    disc_channel_max: int = Field(512, ge=1)  # ... capped at this

    @model_validator(mode="after")
    def _check(self) -> IDE3DConfig:
        check_powers_of_two(self, ("resolution", "render_resolution", "semantic_resolution",
                                   "plane_resolution"), minimum=8)
        check_render_resolution(self)
        if self.semantic_resolution >= self.plane_resolution:
            raise ValueError(f"semantic_resolution {self.semantic_resolution} must be below "
                             f"plane_resolution {self.plane_resolution}")
        check_part_count(self.num_parts, PART_NAMES)
        return self


class MLPDecoder(nn.Sequential):
    """One hidden layer with softplus (IDE-3D's Phi_s and Phi_t): (..., in) -> (..., out)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__(EqualLinear(in_features, hidden), nn.Softplus(),
                         EqualLinear(hidden, out_features))


def texture_groups(texture: torch.Tensor) -> list[list[int]]:
    """Parts grouped by identical texture codes over the whole batch; texture (B, K, w_dim)."""
    groups: list[list[int]] = []
    for part in range(texture.shape[1]):
        match = next((g for g in groups if torch.equal(texture[:, g[0]], texture[:, part])), None)
        if match is None:
            groups.append([part])
        else:
            match.append(part)
    return groups


class IDE3DGenerator(PartGenerator):
    """W+ latents (layout in the module docstring) and a camera -> image, mask, ..."""

    def __init__(self, config: IDE3DConfig):
        super().__init__()
        self.config = config
        self.num_parts, self.z_dim, self.w_dim = config.num_parts, config.z_dim, config.w_dim
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.triplane = TriplaneGenerator(
            config.w_dim, config.semantic_resolution, config.plane_resolution,
            config.semantic_channels, config.plane_channels, config.triplane_channel_base,
            config.triplane_channel_max)
        self.semantic_decoder = MLPDecoder(config.semantic_channels, config.decoder_hidden,
                                           1 + config.num_parts)  # Phi_s -> (sigma, s)
        self.texture_decoder = MLPDecoder(config.plane_channels, config.decoder_hidden,
                                          config.feature_channels)  # Phi_t -> c
        self.render_net = build_render_net(config)

    part_edit = "texture"  # the region-level texture edit; IDE-3D's shape code is holistic

    def sample_latents(
        self, n: int, generator: torch.Generator | None = None, truncation: float = 1.0,
        mixing: float = 0.0,
    ) -> torch.Tensor:
        """(n, 1+2K, w_dim): one shape code (slot 0 and its copies) and one texture code (in
        every texture slot) per sample, each from its own z through the mapping network.

        `mixing` (SemanticStyleGAN's style mixing of part codes) does not apply: IDE-3D has no
        part codes to mix, so it is ignored."""
        device = next(self.parameters()).device
        z = torch.randn(n * 2, self.z_dim, generator=generator)
        codes = self.mapping(z.to(device)).view(n, 2, self.w_dim)
        if truncation != 1.0:
            codes = self.mapping.w_avg.lerp(codes, truncation)
        w = codes[:, 1:2].repeat(1, slot_count(self.num_parts), 1)  # w_t in every slot ...
        w[:, 1::2] = codes[:, :1]  # ... but w_s in the shape slots ...
        w[:, 0] = codes[:, 0]  # ... and in slot 0
        return w

    def slots_of(self, part: int, what: str = "both") -> list[int]:
        """Shape is holistic (slot 0 and its copies); texture is the part's own slot."""
        shape = [0, *range(1, slot_count(self.num_parts), 2)]
        texture = part_slots(part, "texture")
        return {"shape": shape, "texture": texture, "both": shape + texture}[what]

    def semantic_field(self, planes: torch.Tensor, points: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Phi_s at points (B, M, 3): raw density (B, M) and semantic logits (B, M, K)."""
        raw = self.semantic_decoder(sample_triplane(planes, points, self.config.triplane_extent))
        return raw[..., 0], raw[..., 1:]

    def colour_field(self, shared: torch.Tensor, texture: torch.Tensor, points: torch.Tensor,
                     labels: torch.Tensor, randomize_noise: bool) -> torch.Tensor:
        """Phi_t at points (B, M, 3): colour features (B, M, F) in [0, 1]. A point labelled k
        (`labels` (B, M)) takes its colour from the tri-plane of texture slot k; one tri-plane
        is generated per distinct code in `texture` (B, K, w_dim)."""
        groups = texture_groups(texture)
        colour = torch.zeros(())
        for group in groups:
            planes = self.triplane.texture(shared, texture[:, group[0]], randomize_noise)
            raw = self.texture_decoder(sample_triplane(planes, points, self.config.triplane_extent))
            c = torch.sigmoid(raw) * (1 + 2e-3) - 1e-3  # EG3D's colour activation
            if len(groups) == 1:  # one code for every part: no selection needed
                return c
            inside = torch.isin(labels, torch.tensor(group, device=labels.device))
            colour = colour + c * inside[..., None]
        return colour

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

        `iteration` is accepted for the shared loop and unused. IDE-3D is holistic, so
        `active_parts` (progressive generation by parts) is refused.
        """
        if active_parts is not None:
            raise ValueError("ide3d is a holistic model: it cannot render a subset of parts")
        cfg = self.config
        batch, r = w.shape[0], cfg.render_resolution
        samples = num_ray_samples or (cfg.ray_samples_train if self.training
                                      else cfg.ray_samples_test)
        noise = self.training
        semantic_planes, shared = self.triplane.semantic(w[:, 0], noise)
        origins, directions = pixel_rays(cam2world, intrinsics, r)  # (B, r*r, 3) each
        t = ray_depths(batch, r * r, samples, stratified=self.training, device=w.device,
                       dtype=w.dtype)  # (B, r*r, N)
        points = ray_points(origins, directions, t).reshape(batch, -1, 3)  # (B, M, 3)
        raw_sigma, logits = self.semantic_field(semantic_planes, points)
        labels = logits.argmax(-1)  # (B, M) semantic label of each sample point
        colour = self.colour_field(shared, w[:, 2::2], points, labels, noise)  # (B, M, F)
        sigma = F.softplus(raw_sigma - 1).view(batch, r * r, samples)  # EG3D's activation
        weights = nerf_weights(sigma, t)  # (B, r*r, N)
        feature = render_map(weights, colour, r)  # (B, F, r, r) C_l
        image_lr = 2 * feature[:, :3] - 1  # I_l in [-1, 1]
        mask_coarse = 2 * render_map(weights, torch.softmax(logits, dim=-1), r) - 1  # S_l
        # The up-sampler reads the features centred like the image ([0, 1] -> [-1, 1]): an
        # all-positive input makes its zero-padded convs print a frame around the image.
        residual, mask_residual = self.render_net(2 * feature - 1, randomize_noise=noise)
        size = residual.shape[-2:]
        image = F.interpolate(image_lr, size=size, mode="bilinear", align_corners=False) + residual
        mask = F.interpolate(mask_coarse, size=size, mode="bilinear",
                             align_corners=False) + mask_residual
        return {
            "image": image,  # (B, 3, R, R) I_h
            "mask": mask,  # (B, K, R, R) S_h
            "mask_coarse": mask_coarse,  # (B, K, r, r)
            "image_lr": image_lr,  # (B, 3, r, r)
            "raw_image": image_lr,  # I_l for D_dual (models.discriminator.discriminator_inputs)
            "raw_mask": mask_coarse,  # S_l for D_dual
            "depth": expected_depth(weights, t).reshape(batch, 1, r, r),  # head units
            "semantic_planes": semantic_planes,  # (B, 3, C_s, S, S) for the regulariser
        }

    def regularizers(self, output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """lambda_density * L_density (Eq. 3), as EG3D computes it: the mean L1 difference of
        the raw density at random points of the tri-plane box and at the points moved by
        epsilon."""
        cfg = self.config
        planes = output["semantic_planes"]
        x = torch.rand(planes.shape[0], cfg.density_reg_points, 3, device=planes.device)
        x = cfg.triplane_extent * (2 * x - 1)
        x_eps = x + cfg.density_reg_distance * torch.randn_like(x)
        raw, _ = self.semantic_field(planes, torch.cat([x, x_eps], dim=1))  # (B, 2n)
        n = cfg.density_reg_points
        return {"density": cfg.density_reg_weight * (raw[:, :n] - raw[:, n:]).abs().mean()}


class LowHighDiscriminator(nn.Module):
    """IDE-3D's D_dual: the shared dual-branch discriminator on the high-resolution image and
    mask, each concatenated with its low-resolution version up-sampled (EG3D, IDE-3D Eq. 2).

    The low-resolution inputs are the generator's raw render for generated pairs and, for real
    pairs, the real image and mask at the render resolution (`real_inputs`).
    """

    def __init__(self, config: IDE3DConfig) -> None:
        super().__init__()
        self.net = build_dual_branch_discriminator(config, num_parts=2 * config.num_parts,
                                                   image_channels=6)

    @staticmethod
    def pair(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R), (B, C, r, r) -> (B, 2C, R, R): high ++ up(low)."""
        up = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([high, up], dim=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, raw_image: torch.Tensor,
                raw_mask: torch.Tensor) -> torch.Tensor:
        """image (B, 3, R, R), mask (B, K, R, R), their raw renders (B, 3 | K, r, r) -> (B, 1)."""
        return self.net(self.pair(image, raw_image), self.pair(mask, raw_mask))


def real_inputs(config: IDE3DConfig, image: torch.Tensor, mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """A real pair as D_dual reads it (Eq. 2: D(I, I_r, S_r, S)): the pair and its copy
    area-downsampled to the render resolution, which D up-samples back like a raw render."""
    r = config.render_resolution
    return {"image": image, "mask": mask,
            "raw_image": F.adaptive_avg_pool2d(image, r),  # (B, 3, r, r)
            "raw_mask": F.adaptive_avg_pool2d(mask, r)}  # (B, K, r, r)


PRESETS = {
    "smoke": dict(resolution=32, render_resolution=16, z_dim=32, w_dim=32, mapping_layers=2,
                  semantic_resolution=8, plane_resolution=16, semantic_channels=8,
                  plane_channels=8, triplane_channel_base=128, triplane_channel_max=32,
                  decoder_hidden=16, feature_channels=8, ray_samples_train=6,
                  ray_samples_test=8, density_reg_points=64, render_channel_base=256,
                  render_channel_max=16, disc_channel_base=256, disc_channel_max=32),
    "cpu": dict(resolution=32, render_resolution=16, z_dim=64, w_dim=64, mapping_layers=4,
                semantic_resolution=16, plane_resolution=32, semantic_channels=16,
                plane_channels=16, triplane_channel_base=1024, triplane_channel_max=64,
                decoder_hidden=32, feature_channels=16, ray_samples_train=12,
                ray_samples_test=24, density_reg_points=256, render_channel_base=1024,
                render_channel_max=64, disc_channel_base=1024, disc_channel_max=64),
    # 512 px output, 128 px neural rendering (supp. B, second stage); activation checkpointing
    "paper": dict(checkpoint_resolution=128),
}

register_model(ModelSpec(
    name="ide3d", config_class=IDE3DConfig, build_generator=IDE3DGenerator,
    build_discriminator=LowHighDiscriminator, real_inputs=real_inputs, presets=PRESETS,
    disentanglement="weak",
    three_d_aware=True,
    description="IDE-3D: holistic semantic tri-plane GAN with dual decoders, regional texture",
))
