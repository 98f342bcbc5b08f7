"""The papers' published numbers, copied exactly, for clearly labelled reference columns.

They were measured on CelebAMask-HQ at 512x512 with the Inception feature extractor; they
stand beside measured numbers in their own column and are never mixed with them. Keys are
the zoo's registry names; a number the papers do not state is absent, never guessed.
"""

from __future__ import annotations

# Column labels: where and how the published numbers were measured.
SSGAN3D_LABEL = "paper, CelebAMask-HQ 512x512, Inception"  # 3D-SSGAN (papers/001), FID
DISENTANGLEMENT_LABEL = "paper, CelebAMask-HQ 512x512"  # 3D-SSGAN Table 1
IDE3D_LABEL = "paper, CelebAHQ-Mask 512x512"  # IDE-3D (papers/002): Inception, ArcFace

# 3D-SSGAN, Table 1 ("Ours" = 3dssgan, "CNeRF [15]" = cnerf): D_mean and masked D_mean after
# replacing one part's latent code, over 1,000 random portraits.
DISENTANGLEMENT: dict[str, dict[str, dict[str, float]]] = {
    "3dssgan": {
        "d_mean": {"mouth": 0.0413, "eyes": 0.0340, "brows": 0.0355, "nose": 0.0891,
                   "hair": 0.2244},
        "d_mean_masked": {"mouth": 0.0381, "eyes": 0.0334, "brows": 0.0225, "nose": 0.0836,
                          "hair": 0.0848},
    },
    "cnerf": {
        "d_mean": {"mouth": 0.0818, "eyes": 0.0509, "brows": 0.0452, "nose": 0.0583,
                   "hair": 0.3111},
        "d_mean_masked": {"mouth": 0.0658, "eyes": 0.0479, "brows": 0.0420, "nose": 0.0552,
                          "hair": 0.1665},
    },
}

# 3D-SSGAN, Table 2: FID (30K real vs 50K generated images). FENeRF (12.1) is not in the zoo.
COMPARISON_FID: dict[str, float] = {
    "3dssgan": 14.5,  # "Ours"
    "ssgan2d": 5.7,  # "SSGAN [5]" (SemanticStyleGAN)
    "ide3d": 4.9,  # "IDE-3D [13]"
}

# 3D-SSGAN, Table 3: FID of the ablations, keyed by (model.relative_depth,
# model.mask_nerf_weights).
ABLATION_FID: dict[tuple[bool, bool], float] = {
    (True, True): 14.5,  # "Full model"
    (False, True): 20.01,  # "w/o relative depth"
    (True, False): 47.48,  # "w/o NeRF-based weights"
}

# 3D-SSGAN, Sec. 4.2 ("2D-to-3D lifting strategy") gives no per-setting numbers, only this.
LIFTING_TEXT = ('3D-SSGAN Sec. 4.2 reports no per-setting FIDs for the lifting ablation (alpha = '
                '1 or 2, two symmetric inverse-proportional functions), only "consistent FID '
                'values which are around 14"')


# 3D-SSGAN's claims about its ablations (Table 3, Sec. 4.2, Figs. 7 and 9), each as the change
# of one setting against the full model and what the paper says that change does to a metric:
# (setting key, value, metric, expected direction ("worse", or "same" for no difference),
# the claim in the paper's words or numbers).
CLAIMS: list[tuple[str, object, str, str, str]] = [
    ("model.relative_depth", False, "kid", "worse",
     "Table 3: w/o relative depth, FID 20.01 against 14.5 (realism drops)"),
    ("model.relative_depth", False, "view/mask_miou", "worse",
     "Fig. 7: w/o relative depth, images and masks inconsistent across views (nose, mouth)"),
    ("model.mask_nerf_weights", False, "kid", "worse",
     "Table 3: w/o NeRF-based weights in the mask renderer, FID 47.48 against 14.5"),
    ("model.mask_nerf_weights", False, "view/mask_miou", "worse",
     "Fig. 9: w/o NeRF-based weights, masks implausible from non-frontal views"),
    ("model.lifting.alpha", 2.0, "kid", "same",
     "Sec. 4.2: Gaussian alpha = 2, FID about 14 like alpha = 1"),
    ("model.lifting.function", "inverse_abs", "kid", "same",
     "Sec. 4.2: symmetric inverse-proportional psi, FID about 14 like the Gaussian"),
    ("model.lifting.function", "inverse_square", "kid", "same",
     "Sec. 4.2: symmetric inverse-proportional psi, FID about 14 like the Gaussian"),
]

# IDE-3D, Table 1, CelebAHQ-Mask columns ("Ours 512^2" = ide3d). The FFHQ columns and the
# baselines (FENeRF, StyleNeRF, StyleSDF, EG3D) are not models of the zoo.
IDENTITY: dict[str, dict[str, float]] = {
    "ide3d": {"fid": 4.9, "kid": 0.135, "id_consistency": 0.75},
}
