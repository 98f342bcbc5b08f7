"""The 13 semantic classes (SemanticStyleGAN's merge of CelebAMask-HQ's 19 labels)."""

from __future__ import annotations

from models.parts import PART_NAMES

# Class id -> name (the models' part order). The id is the value stored in every prepared mask.
CLASS_NAMES: tuple[str, ...] = PART_NAMES
NUM_CLASSES = len(CLASS_NAMES)
CLASS_IDS = {name: index for index, name in enumerate(CLASS_NAMES)}
# Progressive generation (3D-SSGAN Fig. 8): parts switched on one at a time, back to front.
PROGRESSIVE_ORDER = ("background", "face", "neck", "cloth", "hair", "ears", "eyes", "brows",
                     "nose", "mouth")

# CelebAMask-HQ part files -> class, in painting order: later rows overwrite earlier ones.
CELEBAMASK_PAINT_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("face", ("skin",)),
    ("eyeglasses", ("eye_g",)),
    ("eyes", ("l_eye", "r_eye")),
    ("brows", ("l_brow", "r_brow")),
    ("mouth", ("mouth", "u_lip", "l_lip")),
    ("nose", ("nose",)),
    ("hair", ("hair",)),
    ("ears", ("l_ear", "r_ear")),
    ("neck", ("neck", "neck_l")),
    ("cloth", ("cloth",)),
    ("hat", ("hat",)),
    ("earrings", ("ear_r",)),
)

# A fixed colour per class for previews and figures (RGB, 0-255).
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # background
    (204, 153, 119),  # face
    (51, 153, 255),  # eyes
    (102, 51, 0),  # brows
    (230, 30, 60),  # mouth
    (255, 204, 51),  # nose
    (153, 0, 204),  # ears
    (100, 200, 50),  # hair
    (255, 153, 204),  # neck
    (0, 153, 102),  # cloth
    (255, 255, 255),  # eyeglasses
    (255, 102, 0),  # hat
    (0, 255, 255),  # earrings
)
