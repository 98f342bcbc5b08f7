"""Procedural 3D portraits for the embedded synthetic dataset: the solid slots, the `Scene`
batch of solids and appearance, and the per-identity sampler.

Every identity is a head built from the 13 classes of `harness.data.classes` as convex solids:
each solid is an ellipsoid (centre, radii, rotation), optionally intersected with up to
`PLANES` half-spaces and with the unit ball. `harness.data.synthetic_render` renders them.

World and camera conventions are those of `models.camera`: the face looks toward +z, up is +y,
the portrait lies inside the unit ball and cameras sit on the sphere of radius 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from harness.data.classes import CLASS_IDS

PLANES = 2  # most cut planes of one solid

# Solid slots (name, class, number of cut planes). The first `CLIPPED` slots are also cut by the
# unit ball and are sorted by their number of planes; the last `LENSES` slots are the
# see-through eyeglass lenses. Names ending in _p / _n sit at positive / negative world x.
SLOTS: tuple[tuple[str, str, int], ...] = (
    ("hair", "hair", 2),
    ("hair_long", "hair", 2),
    ("hat", "hat", 1),
    ("hat_brim", "hat", 1),
    ("cloth", "cloth", 0),
    ("neck", "neck", 0),
    ("skull", "face", 0),
    ("jaw", "face", 0),
    ("nose_bridge", "nose", 0),
    ("nose_tip", "nose", 0),
    ("lip_upper", "mouth", 0),
    ("lip_lower", "mouth", 0),
    ("eye_p", "eyes", 0),
    ("eye_n", "eyes", 0),
    ("brow_p", "brows", 0),
    ("brow_n", "brows", 0),
    ("ear_p", "ears", 0),
    ("ear_n", "ears", 0),
    ("hair_bun", "hair", 0),
    ("earring_p", "earrings", 0),
    ("earring_n", "earrings", 0),
    ("glasses_bridge", "eyeglasses", 0),
    ("glasses_end_p", "eyeglasses", 0),
    ("glasses_end_n", "eyeglasses", 0),
    ("temple_p", "eyeglasses", 0),
    ("temple_n", "eyeglasses", 0),
    ("lens_p", "eyeglasses", 0),
    ("lens_n", "eyeglasses", 0),
)
SLOT = {name: index for index, (name, _, _) in enumerate(SLOTS)}
SLOT_CLASS = torch.tensor([CLASS_IDS[cls] for _, cls, _ in SLOTS])  # (P,)
SLOT_PLANES = torch.tensor([planes for _, _, planes in SLOTS])  # (P,)
CLIPPED = 6
LENSES = 2
OPAQUE = len(SLOTS) - LENSES


@dataclass
class Scene:
    """Solids and appearance of a batch of portraits (leading dimension: one per portrait)."""

    centre: torch.Tensor  # (B, P, 3) ellipsoid centres, world
    linear: torch.Tensor  # (B, P, 3, 3) world -> unit-sphere frame: diag(1 / radii) @ R^T
    radius_min: torch.Tensor  # (B, P) smallest radius: turns unit-frame offsets into distances
    enabled: torch.Tensor  # (B, P) bool: optional parts that are absent are disabled
    planes: torch.Tensor  # (B, P, PLANES, 4) half-spaces n . x <= h as (n, h)
    albedo: torch.Tensor  # (B, P, 3) base colour in [0, 1]
    iris: torch.Tensor  # (B, 3) iris colour
    lens_alpha: torch.Tensor  # (B,) opacity of the lens tint
    pattern: torch.Tensor  # (B, 4) cloth pattern: stripes weight, checks weight, frequency, phase
    accent: torch.Tensor  # (B, 3) second cloth colour
    backdrop: torch.Tensor  # (B, 2, 3) backdrop colours at the bottom and at the top
    phase: torch.Tensor  # (B, 3) texture phases

    def repeat(self, times: int) -> Scene:
        """Each portrait repeated `times` times in a row (one copy per view)."""
        return Scene(**{
            f.name: getattr(self, f.name).repeat_interleave(times, dim=0) for f in fields(self)
        })


# ---------------------------------------------------------------------------------------------
# Scene sampling (numpy, one generator per identity, so identities do not depend on batching)


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation Rz @ Ry @ Rx for angles (x, y, z) in radians."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Builder:
    """Collects the solids of one portrait into the arrays of a `Scene`."""

    def __init__(self) -> None:
        count = len(SLOTS)
        self.centre = np.zeros((count, 3))
        self.linear = np.tile(np.eye(3), (count, 1, 1))
        self.radius_min = np.ones(count)
        self.enabled = np.zeros(count, dtype=bool)
        self.albedo = np.zeros((count, 3))
        self.planes = np.zeros((count, PLANES, 4))
        self.planes[..., 1:] = (1.0, 0.0, 10.0)  # y <= 10: a half-space that holds in the ball

    def solid(
        self,
        name: str,
        centre: tuple[float, float, float],
        radii: tuple[float, float, float],
        colour: np.ndarray,
        angles: tuple[float, float, float] = (0.0, 0.0, 0.0),
        planes: tuple[tuple[float, float, float, float], ...] = (),
    ) -> None:
        """Add the ellipsoid `name`, cut by `planes` (n_x, n_y, n_z, h): n . x <= h."""
        slot = SLOT[name]
        self.centre[slot] = centre
        self.linear[slot] = np.diag(1.0 / np.asarray(radii)) @ _rotation(angles).T
        self.radius_min[slot] = min(radii)
        self.enabled[slot] = True
        self.albedo[slot] = np.clip(colour, 0.0, 1.0)
        assert len(planes) <= SLOTS[slot][2], f"{name} takes at most {SLOTS[slot][2]} planes"
        for index, plane in enumerate(planes):
            normal = np.asarray(plane[:3]) / np.linalg.norm(plane[:3])
            self.planes[slot, index] = (*normal, plane[3])


def _surface(solids: list[tuple[np.ndarray, np.ndarray]], x: float, y: float, axis: int) -> float:
    """Outermost coordinate along +z (axis=2) or +x (axis=0) of axis-aligned ellipsoids.

    The other two coordinates are (x, y) for axis=2 and (y, z) for axis=0.
    """
    best = -np.inf
    for centre, radii in solids:
        others = [i for i in range(3) if i != axis]
        inside = 1.0 - ((x - centre[others[0]]) / radii[others[0]]) ** 2
        inside -= ((y - centre[others[1]]) / radii[others[1]]) ** 2
        if inside > 0:
            best = max(best, centre[axis] + radii[axis] * math.sqrt(inside))
    return best


def _slope(solids: list[tuple[np.ndarray, np.ndarray]], x: float, y: float) -> float:
    """Angle (radians, about +y) that turns a part at (x, y) to follow the face surface."""
    step = 0.01
    dz = _surface(solids, x + step, y, 2) - _surface(solids, x - step, y, 2)
    return math.atan2(-dz, 2 * step)


_SKIN = np.array([[255, 226, 200], [240, 196, 164], [222, 170, 130], [196, 140, 100],
                  [160, 108, 72], [112, 74, 50]]) / 255.0
_HAIR = np.array([[20, 16, 14], [58, 38, 26], [104, 70, 42], [170, 130, 80], [222, 190, 130],
                  [150, 60, 30], [150, 150, 150]]) / 255.0
_IRIS = np.array([[80, 50, 25], [40, 90, 160], [60, 110, 60], [120, 95, 50], [110, 120, 130]])
_IRIS = _IRIS / 255.0


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour * (1.0 + amount * rng.normal(size=3)), 0.0, 1.0)


def _random_colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A random colour whose channels lie in [low, high], with a random dominant hue."""
    return low + (high - low) * rng.random(3) ** 1.5


def sample_identity(rng: np.random.Generator) -> Scene:
    """One random portrait (a `Scene` with batch size 1) drawn from `rng`."""
    build = _Builder()
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.06)
    hair = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.1)
    face = _add_face(build, rng, skin, hair)
    _add_hair(build, rng, face, hair)
    _add_body(build, rng, skin)
    if rng.random() < 0.10:
        _add_hat(build, rng, face)
    if rng.random() < 0.15:
        _add_glasses(build, rng, face)
    if rng.random() < 0.20:
        _add_earrings(build, rng, face)
    arrays = {
        "centre": build.centre,
        "linear": build.linear,
        "radius_min": build.radius_min,
        "enabled": build.enabled,
        "planes": build.planes,
        "albedo": build.albedo,
        "iris": _jitter(rng, _IRIS[rng.integers(len(_IRIS))], 0.1),
        "lens_alpha": np.array(rng.uniform(0.1, 0.35)),
        "pattern": np.array([rng.random() < 0.3, rng.random() < 0.2,
                             rng.uniform(8.0, 20.0), rng.uniform(0, 2 * math.pi)]),
        "accent": _random_colour(rng, 0.1, 0.95),
        "backdrop": np.stack([_random_colour(rng, 0.15, 0.9), _random_colour(rng, 0.15, 0.9)]),
        "phase": rng.uniform(0, 2 * math.pi, size=3),
    }
    return Scene(**{
        name: torch.from_numpy(np.asarray(value))[None].to(
            torch.bool if name == "enabled" else torch.float32
        )
        for name, value in arrays.items()
    })


@dataclass
class _Face:
    """Landmarks of a sampled face that other parts attach to (world coordinates)."""

    solids: list[tuple[np.ndarray, np.ndarray]]  # (centre, radii) of the skull and the jaw
    eye_x: float
    eye_y: float
    eye_z: float
    ear: tuple[float, float, float]  # centre of the +x ear
    ear_height: float


def _add_face(
    build: _Builder, rng: np.random.Generator, skin: np.ndarray, hair: np.ndarray
) -> _Face:
    """Skull, jaw, eyes, brows, nose, lips and ears."""
    skull = (np.array([0.0, 0.2, -0.05]),
             np.array([rng.uniform(0.38, 0.45), rng.uniform(0.52, 0.6), rng.uniform(0.47, 0.52)]))
    chin = rng.uniform(-0.58, -0.48)
    jaw_y = rng.uniform(-0.05, 0.05)
    jaw = (np.array([0.0, jaw_y, 0.0]),
           np.array([skull[1][0] * rng.uniform(0.82, 0.95), jaw_y - chin, skull[1][2] * 0.9]))
    solids = [skull, jaw]
    build.solid("skull", tuple(skull[0]), tuple(skull[1]), skin)
    build.solid("jaw", tuple(jaw[0]), tuple(jaw[1]), skin)

    eye_y = rng.uniform(0.1, 0.17)
    eye_x = rng.uniform(0.13, 0.17)
    size = rng.uniform(0.85, 1.15)
    eye_radii = (0.068 * size, 0.036 * size * rng.uniform(0.85, 1.15), 0.04 * size)
    eye_z = _surface(solids, eye_x, eye_y, 2) - 0.5 * eye_radii[2]
    brow_y = eye_y + rng.uniform(0.075, 0.11)
    brow_radii = (0.085 * rng.uniform(0.85, 1.15), 0.017 * rng.uniform(0.8, 1.4), 0.03)
    tilt = rng.uniform(-0.15, 0.3)
    brow = _jitter(rng, hair * 0.8, 0.1)
    for sign, side in ((1, "p"), (-1, "n")):
        x = sign * eye_x
        build.solid(f"eye_{side}", (x, eye_y, eye_z), eye_radii, np.array([0.95, 0.95, 0.92]),
                    angles=(0.0, _slope(solids, x, eye_y) * 0.5, 0.0))
        bx = sign * (eye_x + 0.01)
        build.solid(f"brow_{side}", (bx, brow_y, _surface(solids, bx, brow_y, 2) - 0.012),
                    brow_radii, brow, angles=(0.0, _slope(solids, bx, brow_y), -sign * tilt))

    length = rng.uniform(0.17, 0.25)
    width = rng.uniform(0.04, 0.065)
    tip_y = eye_y - length
    mid_y = (eye_y + tip_y) / 2
    nose = _jitter(rng, skin * 0.97, 0.03)
    build.solid("nose_bridge", (0.0, mid_y, _surface(solids, 0.0, mid_y, 2) - 0.025),
                (width * 0.7, length / 2 + 0.02, 0.07), nose, angles=(-0.3, 0.0, 0.0))
    build.solid("nose_tip", (0.0, tip_y + 0.03, _surface(solids, 0.0, tip_y, 2) + 0.025),
                (width, 0.045, 0.055), nose)

    mouth_y = tip_y - rng.uniform(0.1, 0.14)
    mouth_w = rng.uniform(0.08, 0.12)
    lips = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0, 0.03, 3), 0, 1)
    for name, dy, scale in (("lip_upper", 0.018, 1.0), ("lip_lower", -0.02, 0.9)):
        y = mouth_y + dy
        thick = rng.uniform(0.018, 0.03)
        build.solid(name, (0.0, y, _surface(solids, 0.0, y, 2) - 0.02),
                    (mouth_w * scale, thick, 0.04), lips)

    ear_size = rng.uniform(0.85, 1.15)
    ear_y = eye_y - 0.03
    ear_z = -0.04
    ear_x = _surface(solids, ear_y, ear_z, 0) + 0.015
    ear_radii = (0.025, 0.11 * ear_size, 0.07 * ear_size)
    for sign, side in ((1, "p"), (-1, "n")):  # turned so that the back of the ear stands out
        build.solid(f"ear_{side}", (sign * ear_x, ear_y, ear_z), ear_radii, skin * 0.95,
                    angles=(0.0, -sign * 0.6, 0.0))
    return _Face(solids, eye_x, eye_y, eye_z + eye_radii[2], (ear_x, ear_y, ear_z),
                 ear_radii[1])


def _add_hair(build: _Builder, rng: np.random.Generator, face: _Face, hair: np.ndarray) -> None:
    """The hair cap cut at the hairline, plus long hair or a bun by style."""
    style = rng.choice(["short", "long", "bun", "bald"], p=[0.4, 0.35, 0.12, 0.13])
    skull_centre, skull_radii = face.solids[0]
    volume = rng.uniform(0.02, 0.04) if style in ("bun", "bald") else rng.uniform(0.035, 0.1)
    radii = skull_radii + volume * np.array([1.0, 1.1, 1.0])
    centre = skull_centre + np.array([0.0, 0.02, -0.02])
    if style == "bald":
        # hair only on the sides and the back, below the crown
        cuts = ((0.0, 0.25, 1.0, rng.uniform(-0.05, 0.1)), (0.0, 1.0, 0.0, rng.uniform(0.2, 0.4)))
    else:
        hairline = rng.uniform(0.35, 0.55)  # height of the hairline above the forehead centre
        angle = rng.uniform(0.6, 1.0)  # steeper cuts bring the hair lower on the temples
        normal = np.array([rng.uniform(-0.3, 0.3), -math.cos(angle), math.sin(angle)])
        point = np.array([0.0, hairline, _surface(face.solids, 0.0, hairline, 2)])
        cuts = ((*normal, float(normal @ point)), (0.0, -1.0, 0.0, rng.uniform(0.0, 0.3)))
    build.solid("hair", tuple(centre), tuple(radii), hair, planes=cuts)
    if style == "long":
        length = rng.uniform(0.5, 0.95)
        build.solid("hair_long", (0.0, -0.15, -0.12),
                    (radii[0] + rng.uniform(0.04, 0.12), 0.8, radii[2] * 0.9), hair,
                    planes=((0.0, 0.0, 1.0, rng.uniform(-0.05, 0.12)), (0.0, -1.0, 0.0, length)))
    elif style == "bun":
        size = rng.uniform(0.13, 0.19)
        build.solid("hair_bun", (0.0, 0.5, -0.45), (size, size, size), hair)


def _add_body(build: _Builder, rng: np.random.Generator, skin: np.ndarray) -> None:
    """Neck and shoulders (clothed)."""
    width = rng.uniform(0.16, 0.21)
    build.solid("neck", (0.0, -0.62, -0.08), (width, 0.5, width * 0.95), skin * 0.93)
    build.solid("cloth", (0.0, -1.25, -0.08), (rng.uniform(0.8, 1.0), 0.52, 0.42),
                _random_colour(rng, 0.05, 0.95))


def _add_hat(build: _Builder, rng: np.random.Generator, face: _Face) -> None:
    """A crown over the hair, with a brim, a visor, or neither."""
    colour = _random_colour(rng, 0.05, 0.9)
    centre, radii = face.solids[0]
    bottom = rng.uniform(0.35, 0.5)
    tilt = rng.uniform(-0.1, 0.35)  # the hat's bottom rises toward the back
    crown = radii + rng.uniform(0.08, 0.12)
    build.solid("hat", (centre[0], centre[1] + 0.04, centre[2]), tuple(crown), colour,
                planes=((0.0, -math.cos(tilt), -math.sin(tilt), -bottom),))
    kind = rng.choice(["brim", "visor", "none"])
    if kind == "brim":
        build.solid("hat_brim", (0.0, bottom, -0.05), (crown[0] + 0.2, 0.022, crown[2] + 0.2),
                    colour * 0.9, angles=(-tilt, 0.0, 0.0))
    elif kind == "visor":
        build.solid("hat_brim", (0.0, bottom, 0.1), (crown[0] * 0.9, 0.022, crown[2] + 0.15),
                    colour * 0.9, angles=(-tilt - 0.15, 0.0, 0.0),
                    planes=((0.0, 0.0, -1.0, -0.2),))


def _add_glasses(build: _Builder, rng: np.random.Generator, face: _Face) -> None:
    """Two lenses, a bridge, end pieces and temples running back to the ears."""
    frame = _random_colour(rng, 0.0, 0.7) * rng.uniform(0.2, 1.0)
    lens_z = face.eye_z + rng.uniform(0.04, 0.06)
    lens = (0.075 * rng.uniform(0.9, 1.15), 0.055 * rng.uniform(0.85, 1.2), 0.006)
    y = face.eye_y - 0.005
    thin = 0.008
    side_x = face.ear[0] + 0.015
    end_z = 0.15
    for sign, side in ((1, "p"), (-1, "n")):
        build.solid(f"lens_{side}", (sign * face.eye_x, y, lens_z), lens, frame)
        outer = np.array([sign * (face.eye_x + lens[0] * 0.95), y, lens_z])
        inner = np.array([sign * side_x, y, end_z])
        half = np.linalg.norm(inner - outer) / 2
        yaw = math.atan2(*(inner - outer)[[0, 2]])
        build.solid(f"glasses_end_{side}", tuple((inner + outer) / 2), (thin, thin, half + thin),
                    frame, angles=(0.0, yaw, 0.0))
        back = face.ear[2] - 0.02
        build.solid(f"temple_{side}", (sign * side_x, y, (end_z + back) / 2),
                    (thin, thin, (end_z - back) / 2 + thin), frame)
    build.solid("glasses_bridge", (0.0, y + 0.02, lens_z), (face.eye_x - lens[0] + 0.01, thin,
                                                            thin), frame)


def _add_earrings(build: _Builder, rng: np.random.Generator, face: _Face) -> None:
    """A small ball under each ear."""
    size = rng.uniform(0.022, 0.04)
    colour = np.array([0.9, 0.75, 0.3]) if rng.random() < 0.5 else _random_colour(rng, 0.3, 1.0)
    x, y, z = face.ear
    y = y - face.ear_height * 0.95 - size * 0.6
    for sign, side in ((1, "p"), (-1, "n")):
        build.solid(f"earring_{side}", (sign * (x + 0.01), y, z + 0.03), (size, size, size),
                    colour)


def stack_scenes(scenes: list[Scene]) -> Scene:
    """Concatenate scenes along the batch dimension."""
    return Scene(**{f.name: torch.cat([getattr(s, f.name) for s in scenes]) for f in fields(Scene)})
