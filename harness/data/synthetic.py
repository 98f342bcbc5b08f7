"""The embedded synthetic dataset: procedural 3D portraits, a torch ray caster, and caching.

Every identity is a head built from the 13 classes of `harness.data.classes` as convex solids:
each solid is an ellipsoid (centre, radii, rotation), optionally intersected with up to
`PLANES` half-spaces and with the unit ball. A ray's entry into a solid is closed-form (the
ray is mapped into the ellipsoid's unit-sphere frame and a quadratic solved), so every view of
an identity is an exact, 3D-consistent render. The nearest entry over the solids gives the
class, the depth and the normal of each pixel; a large sphere around the scene is the backdrop.

World and camera conventions are those of `models.camera`: the face looks toward +z, up is +y,
the portrait lies inside the unit ball and cameras sit on the sphere of radius 4.
Images are shaded (ambient + Lambert with one light per image, a procedural texture per part and
mild sensor noise) and anti-aliased by supersampling the pixels on part boundaries; the mask is
the class of the surface that the pixel-centre ray hits.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from harness.data.classes import CLASS_IDS, CLASS_NAMES, NUM_CLASSES
from harness.data.prepared import PreparedWriter, read_meta
from harness.errors import UserError
from models.camera import CameraPrior, intrinsics, look_at_origin, pixel_rays

log = logging.getLogger(__name__)

GENERATOR_VERSION = "synthetic-v2"  # bump when the generated pixels change: keys the cache
VAL_FRACTION = 0.1  # the last 10% of identities are the validation split
BACKDROP_RADIUS = 8.0  # head units: the backdrop sphere around the scene
MISS = 1e3  # head units: entry distances at least this large mean "no hit"
_PENALTY = 1e12  # scales a negative discriminant or an empty interval into a miss distance
_DISABLED = 1e16  # |o_local|^2 - 1 of a disabled solid: no ray meets it
PLANES = 2  # most cut planes of one solid
RESOLUTIONS = (32, 64, 128, 256)
_RAY_BLOCK = 1 << 18  # ray-solid pairs per step of the ray caster (keeps tensors in cache)

# Solid slots (name, class, number of cut planes). The first `_CLIPPED` slots are also cut by the
# unit ball and are sorted by their number of planes; the last `_LENSES` slots are the
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
_CLIPPED = 6
_LENSES = 2
_OPAQUE = len(SLOTS) - _LENSES


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


# ---------------------------------------------------------------------------------------------
# Ray casting


@dataclass
class _Hits:
    """Nearest entries of a batch of rays (B images, M rays each)."""

    t: torch.Tensor  # (B, M) distance to the nearest opaque solid, >= MISS where none
    slot: torch.Tensor  # (B, M) int64 slot of that solid
    t_lens: torch.Tensor  # (B, M) distance to the nearest lens, >= MISS where none
    slot_lens: torch.Tensor  # (B, M) int64 slot of that lens


@dataclass
class _Layout:
    """The solids a batch uses and their ray-independent terms. Slots absent from every image
    are skipped, except the lenses, which always close the list."""

    slots: torch.Tensor  # (S,) int64 slot of each used solid, ascending
    clipped: int  # the first `clipped` used solids are cut by the unit ball
    layers: list[int]  # cut plane k applies to the first layers[k] used solids
    neg_a: torch.Tensor  # (B, S, 6) minus the quadratic form of |d_local|^2 in products of d
    b: torch.Tensor  # (B, S, 3) linear form of o_local . d_local in d
    c: torch.Tensor  # (B, S, 1) |o_local|^2 - 1, huge for disabled solids
    normals: torch.Tensor  # (B, L, 3) cut plane normals, all layers in a row
    enter_room: torch.Tensor  # (B, L, 1) n . o - h: entry distance times -(n . d)
    leave_room: torch.Tensor  # (B, L, 1) |h - n . o|
    index: torch.Tensor  # (S, 1) int32 position of each used solid


def _layout(scene: Scene, origin: torch.Tensor) -> _Layout:
    """Per image and solid constants of the ray-ellipsoid quadratics and of the cut planes."""
    used = scene.enabled.any(0)
    used[_OPAQUE:] = True
    slots = used.nonzero()[:, 0]  # (S,)
    assert len(slots) <= 32, "the solid index must fit in 5 mantissa bits"
    linear = scene.linear[:, slots]  # (B, S, 3, 3)
    local_origin = (linear @ (origin[:, None] - scene.centre[:, slots])[..., None])[..., 0]
    c = (local_origin * local_origin).sum(-1) - 1.0  # (B, S)
    c = torch.where(scene.enabled[:, slots], c, torch.full_like(c, _DISABLED))
    b = (linear.transpose(-1, -2) @ local_origin[..., None])[..., 0]  # (B, S, 3)
    quad = linear.transpose(-1, -2) @ linear  # (B, S, 3, 3)
    a = torch.stack([quad[..., 0, 0], quad[..., 1, 1], quad[..., 2, 2], 2 * quad[..., 0, 1],
                     2 * quad[..., 0, 2], 2 * quad[..., 1, 2]], dim=-1)  # (B, S, 6)
    layers = [int((SLOT_PLANES[slots] > k).sum()) for k in range(PLANES)]
    planes = torch.cat([scene.planes[:, slots[:n], k] for k, n in enumerate(layers)], 1)  # (B,L,4)
    room = planes[..., 3:] - (planes[..., :3] * origin[:, None]).sum(-1, keepdim=True)  # (B,L,1)
    index = torch.arange(len(slots), dtype=torch.int32)[:, None]
    return _Layout(slots, int((slots < _CLIPPED).sum()), layers, -a, b, c[..., None],
                   planes[..., :3], -room, room.abs(), index)


def _clip(layout: _Layout, origin: torch.Tensor, dt: torch.Tensor, t_in: torch.Tensor,
          t_out: torch.Tensor) -> torch.Tensor:
    """Entry distances (B, C, M) into the clipped solids' intervals [t_in, t_out] (B, C, M)
    intersected with their cut planes and the unit ball; >= MISS where nothing is left.

    dt: (B, 3, M) ray directions. Written with clamps rather than masks, which are slow on CPU.
    """
    centre_t = -(origin[..., None] * dt).sum(1, keepdim=True)  # (B, 1, M): nearest the origin
    ball = centre_t**2 + (1.0 - (origin * origin).sum(-1))[:, None, None]
    half = ball.clamp(min=0).sqrt()
    enter = torch.maximum(t_in, centre_t - half - _PENALTY * ball.clamp(max=0))
    leave = torch.minimum(t_out, centre_t + half)
    along = layout.normals @ dt  # (B, L, M): n . d
    # n . (o + t d) <= h: entered at (h - n.o) / (n.d) when n.d < 0; -inf (inside) or +inf
    # (never inside) when n.d > 0. Left at that distance when n.d > 0; never when n.d < 0.
    enters = layout.enter_room / (-along).clamp_(min=0)
    leaves = layout.leave_room / along.clamp_(min=0)
    start = 0
    for count in layout.layers:
        stop = start + count
        enter[:, :count] = torch.maximum(enter[:, :count], enters[:, start:stop])
        leave[:, :count] = torch.minimum(leave[:, :count], leaves[:, start:stop])
        start = stop
    return enter + _PENALTY * (enter - leave).clamp_(min=0)


def _cast_block(layout: _Layout, origin: torch.Tensor, d: torch.Tensor) -> _Hits:
    """Nearest entries for rays from `origin` (B, 3) along unit directions `d` (B, M, 3)."""
    dt = d.transpose(1, 2)  # (B, 3, M)
    products = torch.stack([dt[:, 0] ** 2, dt[:, 1] ** 2, dt[:, 2] ** 2, dt[:, 0] * dt[:, 1],
                            dt[:, 0] * dt[:, 2], dt[:, 1] * dt[:, 2]], dim=1)  # (B, 6, M)
    neg_a = layout.neg_a @ products  # (B, S, M): -|d_local|^2
    b = layout.b @ dt  # (B, S, M): o_local . d_local
    disc = (b * b).add_(neg_a * layout.c)
    root = disc.clamp(min=0).sqrt_()
    miss = disc.clamp_(max=0).mul_(-_PENALTY)  # 0 where the ray meets the ellipsoid
    count = layout.clipped
    t_out = (b[:, :count] - root[:, :count]) / neg_a[:, :count]  # (B, C, M) exit distances
    t = root.add_(b).div_(neg_a).add_(miss)  # (B, S, M) entry distances
    t[:, :count] = _clip(layout, origin, dt, t[:, :count], t_out)
    # distances are positive, so their bits sort like them: keep the solid's position in the
    # 5 lowest mantissa bits and one integer minimum gives both the distance and the solid
    packed = t.view(torch.int32).bitwise_and_(~31).bitwise_or_(layout.index)
    nearest = packed[:, :-_LENSES].amin(1)  # (B, M)
    lens = packed[:, -_LENSES:].amin(1)
    return _Hits(
        (nearest & ~31).view(torch.float32), layout.slots[(nearest & 31).long()],
        (lens & ~31).view(torch.float32), layout.slots[(lens & 31).long()],
    )


def cast(scene: Scene, origin: torch.Tensor, directions: torch.Tensor) -> _Hits:
    """Nearest entries for rays from `origin` (B, 3) along unit `directions` (B, M, 3)."""
    layout = _layout(scene, origin)
    step = max(1, _RAY_BLOCK // (directions.shape[0] * len(layout.slots)))
    blocks = [_cast_block(layout, origin, directions[:, i : i + step])
              for i in range(0, directions.shape[1], step)]
    return _Hits(*(torch.cat([getattr(h, f.name) for h in blocks], 1) for f in fields(_Hits)))


# ---------------------------------------------------------------------------------------------
# Shading

_AMBIENT = 0.45
_SPECULAR = torch.zeros(NUM_CLASSES)  # specular strength per class
_SPECULAR[[CLASS_IDS["eyes"], CLASS_IDS["eyeglasses"], CLASS_IDS["earrings"]]] = 0.5
_SPECULAR[[CLASS_IDS["mouth"], CLASS_IDS["hair"], CLASS_IDS["face"], CLASS_IDS["nose"]]] = 0.08


def _gather(values: torch.Tensor, slot: torch.Tensor, image: torch.Tensor | None = None
            ) -> torch.Tensor:
    """values (B, P, ...) picked by slot (B, M) -> (B, M, ...); or, given image indices of the
    same shape as slot, by (image, slot) pairs."""
    batch, count = values.shape[:2]
    image = torch.arange(batch)[:, None] if image is None else image
    return values.reshape(batch * count, *values.shape[2:])[slot + count * image]


def _solid_table(scene: Scene) -> torch.Tensor:
    """(B, P, 21) what shading needs of each solid: linear (9), centre (3), smallest radius (1),
    cut planes (8), so that one gather per ray fetches all of it."""
    batch, count = scene.centre.shape[:2]
    return torch.cat([scene.linear.reshape(batch, count, 9), scene.centre,
                      scene.radius_min[..., None], scene.planes.reshape(batch, count, 8)], -1)


def _length(vectors: torch.Tensor) -> torch.Tensor:
    """(...,) Euclidean lengths of (..., 3) vectors (faster than torch.norm for 3 components)."""
    return (vectors * vectors).sum(-1).sqrt()


def _surface_frame(
    rows: torch.Tensor, points: torch.Tensor, slot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-sphere coordinates (..., 3) and outward unit normals (..., 3) at surface `points`
    (..., 3) of the solids `slot` (...), whose `_solid_table` rows (..., 21) are given.

    On a clipped solid the boundary that holds the point (ellipsoid, cut plane or unit ball) is
    the one whose signed distance is largest there (closest to zero).
    """
    linear = rows[..., :9].unflatten(-1, (3, 3))
    local = (linear @ (points - rows[..., 9:12])[..., None])[..., 0]
    normal = (linear.transpose(-1, -2) @ local[..., None])[..., 0]
    distance = (_length(local) - 1.0) * rows[..., 12]
    planes = rows[..., 13:].unflatten(-1, (PLANES, 4))  # unused planes are far away
    plane_distance = (planes[..., :3] * points[..., None, :]).sum(-1) - planes[..., 3]
    best, which = plane_distance.max(-1)
    plane_normal = planes[..., :3].gather(-2, which[..., None, None].expand(*which.shape, 1, 3))
    normal = torch.where((best > distance)[..., None], plane_normal[..., 0, :], normal)
    ball_distance = _length(points) - 1.0
    on_ball = (slot < _CLIPPED) & (ball_distance > torch.maximum(best, distance))
    normal = torch.where(on_ball[..., None], points, normal)
    return local, normal / _length(normal)[..., None]


def _texture(scene: Scene, points: torch.Tensor, classes: torch.Tensor,
             local: torch.Tensor, albedo: torch.Tensor) -> torch.Tensor:
    """(B, M, 3) albedo with the procedural texture of each class applied."""
    x, y, z = points.unbind(-1)
    phase = scene.phase[:, None]  # (B, 1, 3)
    skin = 1.0 + 0.04 * torch.sin(23 * x + phase[..., 0]) * torch.sin(19 * y + phase[..., 1])
    azimuth = torch.atan2(x, z + 0.05)
    strands = 0.85 + 0.15 * torch.sin(38 * azimuth + 4 * torch.sin(6 * y + phase[..., 2]))
    pattern = scene.pattern[:, None]  # (B, 1, 4)
    stripes = torch.sin(pattern[..., 2] * y + pattern[..., 3]) > 0
    checks = (torch.sin(pattern[..., 2] * x) > 0) ^ stripes
    use_accent = (stripes & (pattern[..., 0] > 0)) | (checks & (pattern[..., 1] > 0))
    factor = torch.ones_like(x)
    factor = torch.where((classes == CLASS_IDS["face"]) | (classes == CLASS_IDS["neck"]),
                         skin, factor)
    factor = torch.where(classes == CLASS_IDS["hair"], strands, factor)
    colour = albedo * factor[..., None]
    cloth = (classes == CLASS_IDS["cloth"]) & use_accent
    colour = torch.where(cloth[..., None], scene.accent[:, None].expand_as(colour), colour)
    eye = classes == CLASS_IDS["eyes"]
    iris = eye & (local[..., 2] > 0.72)
    colour = torch.where(iris[..., None], scene.iris[:, None].expand_as(colour), colour)
    pupil = eye & (local[..., 2] > 0.92)
    return torch.where(pupil[..., None], torch.full_like(colour, 0.05), colour)


def _backdrop(scene: Scene, origin: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Distance (B, M) to the backdrop sphere and its colour (B, M, 3)."""
    centre_t = -(d * origin[:, None]).sum(-1)  # (B, M)
    reach = centre_t**2 - (origin * origin).sum(-1, keepdim=True) + BACKDROP_RADIUS**2
    t = centre_t + reach.sqrt()
    direction = (origin[:, None] + t[..., None] * d) / BACKDROP_RADIUS  # (B, M, 3) unit
    height = (direction[..., 1:2] * 2.0 + 0.5).clamp(0, 1)
    colour = scene.backdrop[:, None, 0] * (1 - height) + scene.backdrop[:, None, 1] * height
    blobs = torch.sin(5 * direction[..., 0] + scene.phase[:, None, 0]) * torch.sin(
        4 * direction[..., 1] + scene.phase[:, None, 1])
    return t, colour * (1.0 + 0.08 * blobs[..., None])


def _light(colour: torch.Tensor, normal: torch.Tensor, d: torch.Tensor, light: torch.Tensor,
           classes: torch.Tensor) -> torch.Tensor:
    """Ambient + Lambert + a Blinn highlight; `light`: unit vectors toward the light,
    broadcastable to the rays (..., 3)."""
    diffuse = (normal * light).sum(-1, keepdim=True).clamp(min=0)
    half = light - d
    half = half / _length(half)[..., None]
    shine = (normal * half).sum(-1, keepdim=True).clamp(min=0) ** 24
    return colour * (_AMBIENT + (1 - _AMBIENT) * diffuse) + _SPECULAR[classes][..., None] * shine


def shade(
    scene: Scene, origin: torch.Tensor, d: torch.Tensor, light: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cast and shade rays from `origin` (B, 3) along unit `d` (B, M, 3).

    Returns `colour` (B, M, 3) linear RGB, `classes` (B, M) int64, `t` (B, M) distance to the
    labelled surface and `key` (B, M) int64 naming the surface (to find part boundaries).
    """
    hits = cast(scene, origin, d)
    table = _solid_table(scene)
    t_backdrop, colour_backdrop = _backdrop(scene, origin, d)
    opaque = hits.t < MISS
    t = torch.where(opaque, hits.t, t_backdrop)
    points = origin[:, None] + t[..., None] * d  # (B, M, 3)
    classes = torch.where(opaque, SLOT_CLASS[hits.slot], torch.zeros_like(hits.slot))
    local, normal = _surface_frame(_gather(table, hits.slot), points, hits.slot)
    albedo = _texture(scene, points, classes, local, _gather(scene.albedo, hits.slot))
    colour = _light(albedo, normal, d, light[:, None], classes)
    shaded = {
        "colour": torch.where(opaque[..., None], colour, colour_backdrop),
        "classes": classes,
        "t": t,
        "key": torch.where(opaque, hits.slot, torch.full_like(hits.slot, len(SLOTS))),
    }
    _through_lenses(scene, table, origin, d, light, hits, shaded)
    return shaded


def _through_lenses(
    scene: Scene, table: torch.Tensor, origin: torch.Tensor, d: torch.Tensor,
    light: torch.Tensor, hits: _Hits, shaded: dict[str, torch.Tensor],
) -> None:
    """Blend the eyeglass lenses over what lies behind them, in place in `shaded`.

    A lens is tinted glass inside an opaque rim. As in CelebAMask-HQ's labels (eyes painted over
    eyeglasses), an eye seen through a lens keeps the eye class.
    """
    image, ray = (hits.t_lens < shaded["t"]).nonzero(as_tuple=True)  # (K,) rays through a lens
    if not len(image):
        return
    slot, t_lens, direction = hits.slot_lens[image, ray], hits.t_lens[image, ray], d[image, ray]
    points = origin[image] + t_lens[:, None] * direction  # (K, 3)
    local, normal = _surface_frame(_gather(table, slot, image), points, slot)
    rim = local[:, 0] ** 2 + local[:, 1] ** 2 > 0.82**2  # (K,)
    frame = _gather(scene.albedo, slot, image)  # (K, 3)
    eyeglasses = torch.full_like(slot, CLASS_IDS["eyeglasses"])
    lit_frame = _light(frame, normal, direction, light[image], eyeglasses)
    alpha = scene.lens_alpha[image, None]
    tinted = (1 - alpha) * shaded["colour"][image, ray] + alpha * (0.5 + 0.5 * frame)
    shaded["colour"][image, ray] = torch.where(rim[:, None], lit_frame, tinted)
    relabel = rim | (shaded["classes"][image, ray] != CLASS_IDS["eyes"])
    shaded["classes"][image[relabel], ray[relabel]] = CLASS_IDS["eyeglasses"]
    shaded["t"][image[relabel], ray[relabel]] = t_lens[relabel]
    shaded["key"][image, ray] += (len(SLOTS) + 1) * (1 + rim.long())


# ---------------------------------------------------------------------------------------------
# Rendering whole images


def _boundaries(key: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """(B, R, R) bool: pixels whose 3x3 neighbourhood shows another surface or a depth jump
    (more than 2% of the depth)."""
    pad_key = torch.nn.functional.pad(key[:, None].float(), (1, 1, 1, 1), mode="replicate")
    pad_depth = torch.nn.functional.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")
    same = torch.nn.functional.max_pool2d(pad_key, 3, 1) == -torch.nn.functional.max_pool2d(
        -pad_key, 3, 1)
    nearest = -torch.nn.functional.max_pool2d(-pad_depth, 3, 1)
    jump = torch.nn.functional.max_pool2d(pad_depth, 3, 1) > 1.02 * nearest
    return (~same | jump)[:, 0]


def render(
    scene: Scene, cam2world: torch.Tensor, light: torch.Tensor, resolution: int
) -> dict[str, torch.Tensor]:
    """Render portraits `scene` (B) seen by cameras `cam2world` (B, 4, 4), lit from `light` (B, 3).

    Returns `image` (B, R, R, 3) float in [0, 1], `mask` (B, R, R) int64 class ids and `depth`
    (B, R, R) camera-space z in head units. Pixels on part boundaries average the centre ray
    with four sub-pixel rays; the mask and the depth come from the centre ray alone.
    """
    batch, size = cam2world.shape[0], resolution
    origins, directions = pixel_rays(cam2world, intrinsics(), size)  # (B, R*R, 3)
    origin = origins[:, 0]  # (B, 3)
    centre = shade(scene, origin, directions, light)
    forward = cam2world[:, None, :3, 2]  # (B, 1, 3)
    depth = (centre["t"] * (directions * forward).sum(-1)).view(batch, size, size)
    colour = centre["colour"]  # (B, R*R, 3)
    edges = _boundaries(centre["key"].view(batch, size, size), depth).flatten(1)  # (B, R*R)
    counts = edges.sum(1)
    most = int(counts.max())
    if most:
        order = torch.argsort((~edges).byte(), dim=1, stable=True)[:, :most]  # edge pixels first
        row, col = order // size, order % size
        fine = torch.stack([(2 * row + dy) * 2 * size + 2 * col + dx
                            for dy in (0, 1) for dx in (0, 1)], dim=-1)  # (B, E, 4)
        _, fine_directions = pixel_rays(cam2world, intrinsics(), 2 * size)  # (B, 4*R*R, 3)
        rays = _gather(fine_directions, fine.flatten(1))  # (B, E*4, 3)
        sub = shade(scene, origin, rays, light)["colour"].view(batch, most, 4, 3)
        blended = (_gather(colour, order) + sub.sum(2)) / 5
        valid = torch.arange(most)[None] < counts[:, None]  # (B, E)
        blended = torch.where(valid[..., None], blended, _gather(colour, order))
        colour = colour.scatter(1, order[..., None].expand(-1, -1, 3), blended)
    return {
        "image": colour.clamp(0, 1).view(batch, size, size, 3),
        "mask": centre["classes"].view(batch, size, size),
        "depth": depth,
    }


# ---------------------------------------------------------------------------------------------
# Generation into the prepared format, and the cache

NOISE_STD = 0.012  # sensor noise, fraction of the full intensity range
BLOCK_IDENTITIES = 32  # identities rendered together (all their views in one batch)


def _views(rng: np.random.Generator, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera angles (V, 2) from the paper's prior and light directions (V, 3) for one identity."""
    prior = CameraPrior()
    eps = rng.normal(size=(views, 2))
    angles = np.stack([prior.yaw_mean + prior.yaw_std * eps[:, 0],
                       prior.pitch_mean + prior.pitch_std * eps[:, 1]], axis=1)
    light = rng.normal(size=(views, 3)) * (0.6, 0.4, 0.3) + (0.0, 0.5, 1.0)  # front, above
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    return torch.from_numpy(angles).float(), torch.from_numpy(light).float()


def render_identities(
    first: int, count: int, views: int, resolution: int, seed: int
) -> dict[str, np.ndarray]:
    """Render identities first..first+count-1, `views` each, as prepared-format arrays."""
    scenes, angles, lights = [], [], []
    for identity in range(first, first + count):
        rng = np.random.default_rng([seed, identity])  # one stream per identity
        scenes.append(sample_identity(rng).repeat(views))
        view_angles, view_light = _views(rng, views)
        angles.append(view_angles)
        lights.append(view_light)
    angle = torch.cat(angles)  # (N, 2)
    cam2world = look_at_origin(angle)  # (N, 4, 4)
    out = render(stack_scenes(scenes), cam2world, torch.cat(lights), resolution)
    noise = torch.randn(out["image"].shape, generator=torch.Generator().manual_seed(
        seed * 1_000_003 + first))
    image = ((out["image"] + NOISE_STD * noise).clamp(0, 1) * 255).round().to(torch.uint8)
    total = count * views
    return {
        "images": image.numpy(),
        "masks": out["mask"].to(torch.uint8).numpy(),
        "depth": out["depth"].to(torch.float16).numpy(),
        "angles": angle.numpy(),
        "cameras": cam2world.numpy(),
        "intrinsics": intrinsics().expand(total, 3, 3).numpy(),
        "identity": np.repeat(np.arange(first, first + count), views).astype(np.int64),
    }


def class_frequencies(masks: np.ndarray, chunk: int = 1024) -> dict[str, dict[str, float]]:
    """Per class: the fraction of all pixels, and the fraction of samples containing it."""
    pixels = np.zeros(NUM_CLASSES)
    present = np.zeros(NUM_CLASSES)
    for start in range(0, len(masks), chunk):
        block = np.asarray(masks[start : start + chunk])
        block = block.reshape(len(block), -1)  # (n, R*R)
        counts = np.stack([np.bincount(m, minlength=NUM_CLASSES) for m in block])
        pixels += counts.sum(0)
        present += (counts > 0).sum(0)
    return {name: {"pixels": float(pixels[k] / pixels.sum()),
                   "samples": float(present[k] / len(masks))}
            for k, name in enumerate(CLASS_NAMES)}


def _in_threads(function: Callable[..., Any], jobs: list[tuple[Any, ...]]) -> Iterator[Any]:
    """function(*job) for each job, in order, on as many threads as torch uses.

    Each thread runs torch single-threaded: on a shared machine, blocks on independent threads
    keep both cores busy, where torch's own parallel ops stall waiting for a descheduled thread.
    At most two results per thread are held at once.
    """
    workers = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        pending: deque[Future[Any]] = deque()
        for job in jobs:
            pending.append(pool.submit(function, *job))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_size(identities: int, views: int, resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise UserError(f"--resolution {resolution}: the synthetic data renders at "
                        f"{', '.join(map(str, RESOLUTIONS))}; pick one of those")
    if identities < 2 or views < 1:
        raise UserError(f"--identities {identities} --views {views}: need at least 2 identities "
                        "and 1 view")


def generate_synthetic(
    out_dir: str | Path, identities: int, views: int, resolution: int, seed: int
) -> dict[str, Any]:
    """Render `identities` x `views` samples into a prepared dataset at `out_dir`; its meta.

    Deterministic from `seed`; resumable (an interrupted run continues from its partial
    directory); published atomically. Logs the class frequencies.
    """
    _check_size(identities, views, resolution)
    total = identities * views
    params = {"identities": identities, "views": views, "seed": seed,
              "generator": GENERATOR_VERSION}
    writer = PreparedWriter(out_dir, total, resolution, "synthetic", params, has_depth=True)
    first_val = identities - max(1, math.ceil(VAL_FRACTION * identities))
    todo = [first for first in range(0, identities, BLOCK_IDENTITIES)
            if not writer.done_mask[first * views : (first + BLOCK_IDENTITIES) * views].all()]
    jobs = [(first, min(BLOCK_IDENTITIES, identities - first), views, resolution, seed)
            for first in todo]
    for job, arrays in tqdm(zip(jobs, _in_threads(render_identities, jobs), strict=True),
                            total=len(jobs),
                            desc=f"synthetic {resolution}px", unit="block",
                            disable=not log.isEnabledFor(logging.INFO)):
        arrays["split"] = (arrays["identity"] >= first_val).astype(np.uint8)
        writer.write(job[0] * views, **arrays)
    frequencies = class_frequencies(writer.arrays["masks"])
    log.info("class frequencies (%d samples): %s", total, ", ".join(
        f"{name} {f['pixels']:.2%} px / {f['samples']:.0%} of samples"
        for name, f in frequencies.items()))
    missing = [name for name, f in frequencies.items() if f["samples"] == 0]
    if missing:
        log.warning("classes absent from this dataset (too few identities?): %s",
                    ", ".join(missing))
    return writer.finalize({"class_frequencies": frequencies, "views_per_identity": views})


def default_cache_dir() -> Path:
    """$HARNESS_CACHE_DIR/synthetic, else ~/.cache/ssgan3d-harness/synthetic."""
    root = os.environ.get("HARNESS_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ssgan3d-harness") / "synthetic"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so concurrent trials generate one dataset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(
    identities: int, views: int, resolution: int, seed: int,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cached synthetic dataset with these parameters, generated on first use."""
    _check_size(identities, views, resolution)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    out = root / f"{GENERATOR_VERSION}-i{identities}-v{views}-r{resolution}-s{seed}"
    if (out / "meta.json").is_file():
        return out
    with _locked(root / f".{out.name}.lock"):
        if not (out / "meta.json").is_file():
            log.info("generating synthetic data into %s (first use)", out)
            generate_synthetic(out, identities, views, resolution, seed)
    read_meta(out)
    return out
