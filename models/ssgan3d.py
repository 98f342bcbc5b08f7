"""3D-SSGAN (Liu et al.): K local 2D generators, depth-guided lifting, 3D-aware mask rendering.

Pipeline (paper Fig. 2): W+ latents (Eq. 1) -> K local generators (Fig. 3) give per-part
feature, depth and density maps -> depth-guided lifting to part volumes (Eqs. 5-7) -> fusion
(Eq. 8) and NeRF feature rendering (Eqs. 2-4) -> 3D-aware semantic mask rendering (Eqs. 9-11)
-> SSGAN's render net gives the high-resolution image and mask residual. Trained with SSGAN's
losses plus depth smoothness (Eqs. 12-13) in the shared loop (harness.training).

Depth (Sec. 3.2, Eq. 7): "we predict the relative depth w.r.t the part p_faceBase for the
facial parts normally above the face base. For the part p_faceBase and p_background, we directly
predict their absolute depth values." The face base and the background are the only parts the
paper names as absolute, so by default every other part is relative (`relative_parts`: all
parts but face and background; a shorter list is an option, e.g. only the parts on the face
surface). Depths are in depth-grid index units (0 = back, D-1 = front), as z in Eq. 7:
    face base, background:  d_hat_k = (D-1) sigmoid(raw_k + logit(prior_k))  (absolute)
    every other part:       d_hat_k = d_k^2d + reference,  d_k^2d = range (D-1) tanh(raw_k)
where the reference is the predicted face base depth d_faceBase (Eq. 7, a relative part) or the
face base's prior depth (D-1) prior_face, a constant (an absolute part: `relative_depth: false`,
the "w/o relative depth" arm of Table 3, or a part left out of `relative_parts`). The two arms
thus share the bound, the starting depth and the smoothness term (Eq. 13 reads d_k^2d) and
differ only in what the paper ablates: whether a part's depth follows the predicted face base.
`absolute_depth: part_priors` gives the earlier parameterisation instead (not in the paper):
absolute parts at (D-1) sigmoid(raw_k + logit(DEPTH_PRIOR_k)), a hand-set prior per part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from models.blocks import MappingNetwork
from models.camera import pixel_rays
from models.config import (
    PartLatentConfig,
    check_part_count,
    check_powers_of_two,
    check_render_resolution,
)
from models.discriminator import build_dual_branch_discriminator
from models.generator import PartGenerator
from models.lifting import LiftedRender, LiftingConfig, lifted_density, render_lifted
from models.local_generator import LocalGenerators
from models.losses import depth_smoothness_loss
from models.parts import PART_NAMES
from models.registry import ModelSpec, register_model
from models.render_net import build_render_net
from models.rendering import nerf_weights, quantile_depths, ray_depths, ray_points

FACE_BASE = PART_NAMES.index("face")
ABSOLUTE_PARTS = ("background", "face")  # the parts the paper predicts absolute depth for
# Where each part's absolute depth starts, as a fraction of the volume depth (0 back, 1 front).
# Only face and background are used unless `absolute_depth: part_priors` (not in the paper).
DEPTH_PRIOR = {"background": 0.03, "face": 0.7, "eyes": 0.72, "brows": 0.74, "mouth": 0.72,
               "nose": 0.8, "ears": 0.5, "hair": 0.55, "neck": 0.5, "cloth": 0.5,
               "eyeglasses": 0.8, "hat": 0.6, "earrings": 0.5}
# Starting density of each part relative to the background (multiplies sigma_k^2d). Every
# part's initial 2D density covers the whole image, so without this the parts lifted in front
# (nose, brows, eyeglasses) would occlude the face everywhere at the start of training.
DENSITY_PRIOR = {"background": 1.0, "face": 1.0, "hair": 0.5, "neck": 0.3, "cloth": 0.3,
                 "eyes": 0.05, "brows": 0.05, "mouth": 0.05, "nose": 0.05, "ears": 0.05,
                 "eyeglasses": 0.02, "hat": 0.02, "earrings": 0.02}


class SSGAN3DConfig(PartLatentConfig):
    """3D-SSGAN; the defaults are the paper's settings (Sec. 3.4)."""

    name: Literal["3dssgan"] = "3dssgan"
    render_resolution: int = 64  # pixels, side of the 2D part maps and of the feature render
    volume_depth: int = Field(32, ge=2)  # D, depth cells of each lifted part volume
    z_dim: int = Field(512, ge=1)  # size of z per latent slot
    w_dim: int = Field(512, ge=1)  # size of W
    mapping_layers: int = Field(8, ge=1)  # depth of the mapping network
    local_channels: int = Field(64, ge=1)  # width of the local generators' 1x1 convs (Fig. 3)
    fourier_channels: int = Field(64, ge=2)  # Fourier-feature position embedding (Fig. 3)
    fourier_max_frequency: float = Field(16.0, gt=0)  # cycles over the maps (FourierFeatures)
    feature_channels: int = Field(256, ge=3)  # C of f_k^2d (ToFeature)
    # The paper replaces SSGAN's "two-layer MLP for coarse structure" by one layer; we read
    # that as the layers that share W^base (SSGAN's train.py calls its 2 base layers "layers
    # with shared coarse structure code"), hence base_layers=1, after one linear projection
    # of the Fourier features (coarse_mlp_layers=1, as in SSGAN).
    base_layers: int = Field(1, ge=0)  # local generator layers reading W^base
    shape_layers: int = Field(4, ge=1)  # layers reading W_s^k (depth, density after these)
    texture_layers: int = Field(4, ge=1)  # layers reading W_t^k (features after these)
    coarse_mlp_layers: int = Field(1, ge=1)  # linear layers on the Fourier features
    relative_depth: bool = True  # Table 3 ablation: False predicts absolute depth for all parts
    # parts whose depth is relative to the face base (module docstring: the paper's reading)
    relative_parts: list[str] = [name for name in PART_NAMES if name not in ABSOLUTE_PARTS]
    relative_depth_range: float = Field(0.25, gt=0)  # max |d_k^2d| of the other parts, of D-1
    # "face_prior": parts other than face and background are offsets from the face base (the
    # predicted one if relative, its prior depth if not); "part_priors": absolute parts at a
    # hand-set prior depth each, DEPTH_PRIOR (the earlier default; not in the paper)
    absolute_depth: Literal["face_prior", "part_priors"] = "face_prior"
    lifting: LiftingConfig = LiftingConfig()
    # "reference" materialises volumes (tests); "triton": fused Triton kernel; CUDA, or CPU
    # under TRITON_INTERPRET=1 (tests). Not the default until measured on a GPU.
    lifting_path: Literal["fast", "reference", "triton"] = "fast"
    # Eq. 8 sums the parts' lifted features ("sum"); "density" takes their mean weighted by the
    # parts' lifted densities, as SSGAN composes by masks (not the paper's; models.lifting).
    feature_fusion: Literal["sum", "density"] = "sum"
    # Rays the fast path renders at a time, each chunk's per-sample terms recomputed in the
    # backward pass instead of kept (less memory, one more forward pass of them); 0: all rays.
    ray_chunk: int = Field(0, ge=0)
    # sigma_k^2d = density_scale * DENSITY_PRIOR_k * softplus(raw): not in the paper, which
    # says nothing of the density's scale; shared by every arm of Tables 3 and the lifting study
    density_scale: float = Field(10.0, gt=0)
    mask_nerf_weights: bool = True  # Table 3 ablation: False uses w_i = 1 in Eq. 10 throughout
    mask_warmup_iterations: int = Field(2000, ge=0)  # Eq. 10 uses w_i = 1 before this iteration
    ray_samples_train: int = Field(12, ge=2)  # N per ray in training
    ray_samples_test: int = Field(36, ge=2)  # N per ray at test time
    # Test-time depth-guided sampling (after SemanticHuman-HD): a density-only pass with
    # `depth_guided_coarse` uniform samples per ray finds where each ray's NeRF weight lies;
    # features, masks and depth are then rendered at only `depth_guided_samples` points, at
    # equal-mass quantiles of that weight (`models.rendering.quantile_depths`), instead of at
    # ray_samples_test uniform samples. Off ("uniform") by default.
    test_sampling: Literal["uniform", "depth_guided"] = "uniform"
    # The earlier depth-guided sampling's window and coarse-ray stride: test-time only, so
    # snapshots trained with them render the same without.
    ADDED_KEYS: ClassVar[dict[str, Any]] = {**PartLatentConfig.ADDED_KEYS,
                                             "absolute_depth": "part_priors"}
    RETIRED_KEYS: ClassVar[frozenset[str]] = frozenset({"depth_guided_window",
                                                        "depth_guided_stride"})
    depth_guided_coarse: int = Field(24, ge=2)  # samples of the density-only pass
    depth_guided_samples: int = Field(6, ge=1)  # samples rendered where the weight is
    depth_smoothness_weight: float = Field(0.1, ge=0)  # lambda_ds, Eq. 12
    render_channel_base: int = Field(32768, ge=1)  # render net width at res s: base / s ...
    render_channel_max: int = Field(512, ge=1)  # ... capped at this
    disc_channel_base: int = Field(32768, ge=1)  # discriminator width at res s: base / s ...
    disc_channel_max: int = Field(512, ge=1)  # ... capped at this

    @model_validator(mode="after")
    def _check(self) -> SSGAN3DConfig:
        check_powers_of_two(self, ("resolution", "render_resolution"), minimum=8)
        check_render_resolution(self)
        check_part_count(self.num_parts, PART_NAMES)
        if self.ray_chunk and self.lifting_path != "fast":
            raise ValueError("ray_chunk applies to the fast lifting path; set ray_chunk: 0 "
                             "or lifting_path: fast")
        unknown = [p for p in self.relative_parts if p not in PART_NAMES or p in
                   ABSOLUTE_PARTS]
        if unknown:
            raise ValueError(f"relative_parts: {unknown} are not facial parts; choose from "
                             f"{', '.join(PART_NAMES[2:])}")
        return self


class SSGAN3DGenerator(PartGenerator):
    """W+ latents and a camera -> image, mask, coarse mask, depth and part depth maps."""

    def __init__(self, config: SSGAN3DConfig):
        super().__init__()
        self.config = config
        self.num_parts, self.z_dim, self.w_dim = config.num_parts, config.z_dim, config.w_dim
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.local = LocalGenerators.from_config(config)
        self.render_net = build_render_net(config)
        self.lifting = config.lifting
        relative = torch.tensor([config.relative_depth and name in config.relative_parts
                                 for name in PART_NAMES])
        self.register_buffer("relative", relative, persistent=False)  # (K,) bool
        # absolute (sigmoid) depth: face and background, or every non-relative part
        part_priors = config.absolute_depth == "part_priors"
        sigmoid = torch.tensor([name in ABSOLUTE_PARTS or (part_priors and not rel)
                                for name, rel in zip(PART_NAMES, relative.tolist(), strict=True)])
        self.register_buffer("sigmoid_depth", sigmoid, persistent=False)  # (K,) bool
        prior = torch.tensor([DEPTH_PRIOR[name] for name in PART_NAMES])
        self.register_buffer("depth_prior_logit", torch.logit(prior), persistent=False)  # (K,)
        density = torch.tensor([DENSITY_PRIOR[name] for name in PART_NAMES])
        self.register_buffer("density_prior", density, persistent=False)  # (K,)

    def part_maps(
        self, w: torch.Tensor, active_parts: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-part 2D maps of the local generators, with depths made absolute (Eq. 7)."""
        cfg = self.config
        # feature (B, K, C, H, W), channels last in memory for the fast and Triton lifting
        # paths (which then read it without a copy); raw_depth, density (B, K, H, W)
        feature, raw_depth, density = self.local(
            w, cfg.render_resolution, channels_last=cfg.lifting_path in ("fast", "triton"))
        top = cfg.volume_depth - 1
        absolute = top * torch.sigmoid(raw_depth + self.depth_prior_logit[:, None, None])
        offset = cfg.relative_depth_range * top * torch.tanh(raw_depth)  # d_k^2d, (B, K, H, W)
        face = absolute[:, FACE_BASE : FACE_BASE + 1]  # (B, 1, H, W) d_faceBase
        face_prior = top * torch.sigmoid(self.depth_prior_logit[FACE_BASE])  # its start depth
        reference = torch.where(self.relative[:, None, None], face, face_prior)  # (B, K, H, W)
        sigmoid = self.sigmoid_depth[:, None, None]
        d_hat = torch.where(sigmoid, absolute, offset + reference)  # (B, K, H, W), Eq. 7
        part_depth = torch.where(sigmoid, absolute, offset)  # d_k^2d as predicted, for Eq. 13
        sigma = cfg.density_scale * self.density_prior[:, None, None] * density  # sigma_k^2d
        if active_parts is not None:
            keep = torch.zeros(cfg.num_parts, device=w.device, dtype=feature.dtype)
            keep[list(active_parts)] = 1
            feature = feature * keep[:, None, None, None]
            sigma = sigma * keep[:, None, None]
        return {"feature": feature, "sigma": sigma, "d_hat": d_hat, "part_depth": part_depth}

    def mask_weights_at(self, iteration: int | None) -> str:
        """"nerf" or "uniform" weights in Eq. 10 (ablation switch and warm-up, Sec. 3.4)."""
        if not self.config.mask_nerf_weights:
            return "uniform"
        warming_up = iteration is not None and iteration < self.config.mask_warmup_iterations
        return "uniform" if warming_up else "nerf"

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

        `iteration` (training) selects the mask renderer's warm-up; None means trained.
        `active_parts` keeps only those parts (progressive generation, Fig. 8).
        """
        cfg = self.config
        batch, r = w.shape[0], cfg.render_resolution
        maps = self.part_maps(w, active_parts)
        rendered = self.render_maps(maps, cam2world, intrinsics, iteration, num_ray_samples)
        feature = rendered.feature.transpose(1, 2).reshape(batch, -1, r, r)  # (B, C, r, r)
        mask_logits = rendered.mask_logits.transpose(1, 2).reshape(batch, -1, r, r)  # (B,K,r,r)
        mask_coarse = 2 * torch.softmax(mask_logits, dim=1) - 1  # Eq. 9, in SSGAN's [-1, 1]
        image, mask_residual = self.render_net(feature, randomize_noise=self.training)
        mask = F.interpolate(mask_coarse, size=image.shape[-2:], mode="bilinear",
                             align_corners=False) + mask_residual  # m_hr = up(m) + delta m
        return {
            "image": image,  # (B, 3, R, R)
            "mask": mask,  # (B, K, R, R)
            "mask_coarse": mask_coarse,  # (B, K, r, r)
            "depth": rendered.depth.reshape(batch, 1, r, r),  # (B, 1, r, r) head units
            "part_depth": maps["part_depth"],  # (B, K, r, r) depth-index units
        }

    def render_maps(
        self,
        maps: dict[str, torch.Tensor],
        cam2world: torch.Tensor,
        intrinsics: torch.Tensor,
        iteration: int | None = None,
        num_ray_samples: int | None = None,
    ) -> LiftedRender:
        """Lift the part maps and render features, mask logits and depth (Eqs. 2-11)."""
        cfg = self.config
        batch, r = cam2world.shape[0], cfg.render_resolution
        origins, directions = pixel_rays(cam2world, intrinsics, r)  # (B, r*r, 3) each
        weights = None  # NeRF weights of the samples' densities (Eqs. 2-3)
        if self.uses_depth_guided_sampling(iteration):
            t, weights = self.depth_guided_depths(maps, origins, directions)  # (B, r*r, n) each
        else:
            samples = num_ray_samples or (cfg.ray_samples_train if self.training
                                          else cfg.ray_samples_test)
            t = ray_depths(batch, r * r, samples, stratified=self.training,
                           device=cam2world.device, dtype=cam2world.dtype)  # (B, r*r, N)
        return render_lifted(
            maps["feature"], maps["sigma"], maps["d_hat"], cfg.volume_depth,
            ray_points(origins, directions, t), t, lifting=self.lifting,
            mask_weights=self.mask_weights_at(iteration), path=cfg.lifting_path, weights=weights,
            ray_chunk=cfg.ray_chunk or None, fusion=cfg.feature_fusion,
        )

    def uses_depth_guided_sampling(self, iteration: int | None) -> bool:
        """Depth-guided sampling applies at test time with NeRF weights in Eq. 10 only.

        With w_i = 1 the mask sums densities along the whole ray, not only where the weight is.
        """
        return (not self.training and self.config.test_sampling == "depth_guided"
                and self.mask_weights_at(iteration) == "nerf")

    def depth_guided_depths(self, maps: dict[str, torch.Tensor], origins: torch.Tensor,
                            directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, rays, n) depths and weights of the depth-guided samples of each ray.

        A density-only pass (Eqs. 6-8 without features) with `depth_guided_coarse` uniform
        samples gives each ray's NeRF weights (Eqs. 2-3 on sigma_fused); the
        `depth_guided_samples` samples sit at equal-mass quantiles of them.
        """
        cfg = self.config
        batch, rays = origins.shape[:2]
        t = ray_depths(batch, rays, cfg.depth_guided_coarse, stratified=False,
                       device=origins.device, dtype=origins.dtype)  # (B, rays, Nc)
        sigma = lifted_density(maps["sigma"], maps["d_hat"], cfg.volume_depth,
                               ray_points(origins, directions, t), lifting=self.lifting)
        return quantile_depths(nerf_weights(sigma, t), cfg.depth_guided_samples)

    def regularizers(self, output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model-specific generator losses, already weighted: lambda_ds * L_ds (Eqs. 12-13)."""
        weight = self.config.depth_smoothness_weight
        return {"depth_smoothness": weight * depth_smoothness_loss(output["part_depth"])}


PRESETS = {
    "smoke": dict(resolution=32, render_resolution=16, volume_depth=8, z_dim=32, w_dim=32,
                  mapping_layers=2, local_channels=16, fourier_channels=16, feature_channels=16,
                  base_layers=1, shape_layers=1, texture_layers=1, ray_samples_train=6,
                  ray_samples_test=8, mask_warmup_iterations=4, render_channel_base=256,
                  render_channel_max=16, disc_channel_base=256, disc_channel_max=32),
    "cpu": dict(resolution=32, render_resolution=16, volume_depth=16, z_dim=64, w_dim=64,
                mapping_layers=4, local_channels=32, fourier_channels=32, feature_channels=32,
                base_layers=1, shape_layers=2, texture_layers=2, ray_samples_train=12,
                ray_samples_test=24, mask_warmup_iterations=100, render_channel_base=1024,
                render_channel_max=64, disc_channel_base=1024, disc_channel_max=64),
    "paper": dict(checkpoint_resolution=128),  # activation checkpointing: fits 12 GB at batch 4
}

register_model(ModelSpec(
    name="3dssgan", config_class=SSGAN3DConfig, build_generator=SSGAN3DGenerator,
    build_discriminator=build_dual_branch_discriminator, presets=PRESETS, disentanglement="strong",
    three_d_aware=True,
    description="3D-SSGAN: local 2D generators, depth-guided lifting, 3D-aware mask renderer",
))
