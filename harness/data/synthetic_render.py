"""The torch ray caster and shader of the embedded synthetic dataset: renders `Scene`s.

A ray's entry into a solid of `harness.data.synthetic_scenes` is closed-form (the ray is mapped
into the ellipsoid's unit-sphere frame and a quadratic solved), so every view of an identity is
an exact, 3D-consistent render. The nearest entry over the solids gives the class, the depth and
the normal of each pixel; a large sphere around the scene is the backdrop.

Images are shaded (ambient + Lambert with one light per image and a procedural texture per part)
and anti-aliased by supersampling the pixels on part boundaries; the mask is the class of the
surface that the pixel-centre ray hits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from harness.data.classes import CLASS_IDS, NUM_CLASSES
from harness.data.synthetic_scenes import (
    CLIPPED,
    LENSES,
    OPAQUE,
    PLANES,
    SLOT_CLASS,
    SLOT_PLANES,
    SLOTS,
    Scene,
)
from models.camera import intrinsics, pixel_rays

BACKDROP_RADIUS = 8.0  # head units: the backdrop sphere around the scene
MISS = 1e3  # head units: entry distances at least this large mean "no hit"
_PENALTY = 1e12  # scales a negative discriminant or an empty interval into a miss distance
_DISABLED = 1e16  # |o_local|^2 - 1 of a disabled solid: no ray meets it
_RAY_BLOCK = 1 << 18  # ray-solid pairs per step of the ray caster (keeps tensors in cache)


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
    used[OPAQUE:] = True
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
    return _Layout(slots, int((slots < CLIPPED).sum()), layers, -a, b, c[..., None],
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
    nearest = packed[:, :-LENSES].amin(1)  # (B, M)
    lens = packed[:, -LENSES:].amin(1)
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
    on_ball = (slot < CLIPPED) & (ball_distance > torch.maximum(best, distance))
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
