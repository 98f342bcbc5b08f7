"""SemanticStyleGAN (SSGAN, Shi et al., CVPR 2022): compositional 2D synthesis (Table 2, 2D row).

Pipeline (SSGAN Fig. 2; seasonSH/SemanticStyleGAN `models/semantic_stylegan.py`): W+ latents ->
K local generators (the same `LocalGenerators` as 3D-SSGAN: Fourier features, base / shape /
texture modulated 1x1 layers, ToFeature and ToDepth heads) -> 2D composition by a softmax over
the parts' pseudo-depth maps, m = softmax_k(d_k), f = sum_k m_k f_k -> the render net gives the
image and the mask residual (m_hr = upsample(m) + Delta m). The camera is ignored: SSGAN is not
3D-aware (`three_d_aware=False` in the registry); it has no depth, no low-resolution image.

As SSGAN's code: the background generator predicts no pseudo-depth (its d_0 is 0) and reads its
shape code where the others read W^base; the transparent classes (`transparent_dims` 10 and 12:
eyeglasses, earrings) add their features on top of the renormalised opaque composition instead
of competing for the pixel; the render net starts from the feature map average pooled to
`min_feature_resolution` (`min_feat_size`) and re-injects it at `render_resolution`
(`coarse_size`). The local generators' density head (a 3D-SSGAN addition) is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from models.blocks import MappingNetwork
from models.config import PartLatentConfig, check_part_count, check_powers_of_two
from models.discriminator import build_dual_branch_discriminator
from models.generator import PartGenerator
from models.local_generator import LocalGenerators
from models.parts import PART_NAMES
from models.registry import ModelSpec, register_model
from models.render_net import build_render_net


class SSGAN2DConfig(PartLatentConfig):
    """SemanticStyleGAN; the defaults are its paper settings (SSGAN `train.py`, 512 px)."""

    name: Literal["ssgan2d"] = "ssgan2d"
    render_resolution: int = 64  # pixels, side of the part maps and coarse mask (coarse_size)
    min_feature_resolution: int = 16  # pixels, the render net's starting size (min_feat_size)
    z_dim: int = Field(512, ge=1)  # size of z per latent slot
    w_dim: int = Field(512, ge=1)  # size of W
    mapping_layers: int = Field(8, ge=1)  # depth of the mapping network
    local_channels: int = Field(64, ge=1)  # width of the local generators (local_channel)
    fourier_channels: int = Field(64, ge=4)  # Fourier-feature position embedding
    fourier_max_frequency: float = Field(16.0, gt=0)  # cycles over the maps (FourierFeatures)
    feature_channels: int = Field(512, ge=1)  # C of f_k (coarse_channel)
    base_layers: int = Field(2, ge=0)  # local layers reading W^base (base_layers)
    shape_layers: int = Field(4, ge=1)  # then reading W_s^k (depth_layers - base_layers)
    texture_layers: int = Field(4, ge=1)  # then reading W_t^k (local_layers - depth_layers)
    coarse_mlp_layers: int = Field(1, ge=1)  # learned projection of the Fourier features
    transparent_parts: list[str] = ["eyeglasses", "earrings"]  # SSGAN transparent_dims 10, 12
    render_channel_base: int = Field(32768, ge=1)  # render net width at res s: base / s ...
    render_channel_max: int = Field(512, ge=1)  # ... capped at this
    disc_channel_base: int = Field(32768, ge=1)  # discriminator width at res s: base / s ...
    disc_channel_max: int = Field(512, ge=1)  # ... capped at this

    @model_validator(mode="after")
    def _check(self) -> SSGAN2DConfig:
        check_powers_of_two(self, ("resolution", "render_resolution", "min_feature_resolution"),
                            minimum=4)
        if not self.min_feature_resolution <= self.render_resolution < self.resolution:
            raise ValueError(
                "need min_feature_resolution <= render_resolution < resolution, got "
                f"{self.min_feature_resolution}, {self.render_resolution}, {self.resolution}")
        check_part_count(self.num_parts, PART_NAMES)
        unknown = [p for p in self.transparent_parts if p not in PART_NAMES[1:]]
        if unknown:
            raise ValueError(f"transparent_parts: {unknown} are not parts; choose from "
                             f"{', '.join(PART_NAMES[1:])}")
        return self


class SSGAN2DGenerator(PartGenerator):
    """W+ latents (the camera is ignored) -> image, mask and coarse mask."""

    def __init__(self, config: SSGAN2DConfig):
        super().__init__()
        self.config = config
        self.num_parts, self.z_dim, self.w_dim = config.num_parts, config.z_dim, config.w_dim
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.local = LocalGenerators.from_config(config)
        min_resolution = (config.min_feature_resolution
                          if config.min_feature_resolution < config.render_resolution else None)
        self.render_net = build_render_net(config, min_resolution=min_resolution)
        has_depth = torch.ones(config.num_parts)
        has_depth[0] = 0  # SSGAN: no pseudo-depth for the background generator
        self.register_buffer("has_depth", has_depth[:, None, None], persistent=False)
        transparent = torch.tensor([name in config.transparent_parts for name in PART_NAMES])
        self.register_buffer("transparent", transparent[:, None, None], persistent=False)

    def composite(self, feature: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """SSGAN's `composite`: features (B, K, C, H, W) weighted by seg (B, K, H, W), with the
        opaque parts renormalised among themselves and the transparent ones added on top."""
        opaque = seg.masked_fill(self.transparent, 0)
        opaque = opaque / (opaque.sum(1, keepdim=True) + 1e-8)
        weights = torch.where(self.transparent, seg, opaque)  # (B, K, H, W)
        return torch.einsum("bkhw,bkchw->bchw", weights, feature)

    def forward(
        self,
        w: torch.Tensor,
        cam2world: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        iteration: int | None = None,
        active_parts: Sequence[int] | None = None,
        num_ray_samples: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generate from latents w (B, 1+2K, w_dim); cameras, `iteration` and
        `num_ray_samples` are accepted for the shared interface and ignored.

        `active_parts` keeps only those parts (SSGAN's `composition_mask`).
        """
        cfg = self.config
        feature, depth, _ = self.local(w, cfg.render_resolution)  # (B,K,C,r,r), (B,K,r,r)
        logits = depth * self.has_depth  # pseudo-depth d_k
        if active_parts is not None:
            keep = torch.zeros(cfg.num_parts, dtype=torch.bool, device=w.device)
            keep[list(active_parts)] = True
            logits = logits.masked_fill(~keep[:, None, None], float("-inf"))
        seg = torch.softmax(logits, dim=1)  # (B, K, r, r) m = softmax_k(d_k)
        mask_coarse = 2 * seg - 1  # SSGAN: normalised to [-1, 1]
        image, mask_residual = self.render_net(self.composite(feature, seg),
                                               randomize_noise=self.training)
        mask = F.interpolate(mask_coarse, size=image.shape[-2:], mode="bilinear",
                             align_corners=False) + mask_residual
        return {"image": image, "mask": mask, "mask_coarse": mask_coarse}


PRESETS = {
    "smoke": dict(resolution=32, render_resolution=16, min_feature_resolution=8, z_dim=32,
                  w_dim=32, mapping_layers=2, local_channels=16, fourier_channels=16,
                  feature_channels=16, base_layers=1, shape_layers=1, texture_layers=1,
                  render_channel_base=256, render_channel_max=16, disc_channel_base=256,
                  disc_channel_max=32),
    "cpu": dict(resolution=32, render_resolution=16, min_feature_resolution=8, z_dim=64,
                w_dim=64, mapping_layers=4, local_channels=32, fourier_channels=32,
                feature_channels=32, base_layers=1, shape_layers=2, texture_layers=2,
                render_channel_base=1024, render_channel_max=64, disc_channel_base=1024,
                disc_channel_max=64),
    # SSGAN train.py: --size 512, coarse 64, min_feat 16, 10 local layers; plus activation
    # checkpointing at 128 px and above
    "paper": dict(checkpoint_resolution=128),
}

register_model(ModelSpec(
    name="ssgan2d", config_class=SSGAN2DConfig, build_generator=SSGAN2DGenerator,
    build_discriminator=build_dual_branch_discriminator, presets=PRESETS, disentanglement="strong",
    three_d_aware=False,
    description="SemanticStyleGAN: local 2D generators composed by a softmax over pseudo-depth",
))
