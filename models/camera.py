"""Scene and camera conventions shared by every 3D model and by the synthetic dataset.

Everything geometric in the project is defined here, once, with units.

World frame (right-handed, unit = "head unit", 1.0 is about 12 cm on a real head):
    +x points to the viewer's right in the frontal view (the subject's left),
    +y points up, +z points out of the face toward the frontal camera.
    The portrait (head, neck, top of the shoulders) lies inside the unit ball, so every
    camera ray only needs samples between NEAR and FAR.

Volume grid (the lifted part volumes of 3D-SSGAN, paper Sec. 3.2):
    a (D, H, W) grid spanning the box [-1, 1]^3 with corner-aligned samples:
    column index w = 0..W-1 maps to x = -1..+1, row index h = 0..H-1 maps to y = +1..-1
    (row 0 is the top of the image, as in the 2D generator's output), and depth index
    d = 0..D-1 maps to z = -1..+1 (index D-1 is nearest to the frontal camera).
    `world_to_grid` gives the normalised coordinates that `torch.nn.functional.grid_sample`
    (align_corners=True) expects for a (N, C, D, H, W) tensor.

Cameras:
    on a sphere of radius CAMERA_RADIUS around the origin, looking at the origin, with
    yaw = azimuth in the x-z plane and pitch = polar angle from +y (radians);
    yaw = pitch = pi/2 is the frontal view. The paper's prior is yaw ~ N(pi/2, 0.3),
    pitch ~ N(pi/2, 0.155) (3D-SSGAN Sec. 3.4).
    Camera-to-world matrices use the OpenCV axes (camera x right, y down, z forward).
    Intrinsics are normalised by the image size (fx = fy = 0.5 / tan(fov / 2), cx = cy = 0.5),
    so one matrix serves every resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.precision import float32

CAMERA_RADIUS = 4.0  # head units from the origin to the camera centre
FOV_DEGREES = 2.0 * math.degrees(math.atan(0.25))  # 28.07 deg: the centre plane spans [-1, 1]
NEAR = CAMERA_RADIUS - 1.0  # head units along the ray: the unit ball's front
FAR = CAMERA_RADIUS + 1.0  # head units along the ray: the unit ball's back
YAW_MEAN, YAW_STD = math.pi / 2, 0.3  # radians, paper Sec. 3.4
PITCH_MEAN, PITCH_STD = math.pi / 2, 0.155  # radians, paper Sec. 3.4


@dataclass(frozen=True)
class CameraPrior:
    """Gaussian prior over camera angles (radians); defaults are the paper's."""

    yaw_mean: float = YAW_MEAN
    yaw_std: float = YAW_STD
    pitch_mean: float = PITCH_MEAN
    pitch_std: float = PITCH_STD

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) yaw and pitch angles in radians."""
        eps = torch.randn(n, 2, generator=generator)
        yaw = self.yaw_mean + self.yaw_std * eps[:, 0]
        pitch = self.pitch_mean + self.pitch_std * eps[:, 1]
        return torch.stack([yaw, pitch], dim=1)


def intrinsics(fov_degrees: float = FOV_DEGREES) -> torch.Tensor:
    """(3, 3) normalised pinhole intrinsics (pixel coordinates divided by the image size)."""
    focal = 0.5 / math.tan(math.radians(fov_degrees) / 2)
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])


def camera_position(angles: torch.Tensor, radius: float = CAMERA_RADIUS) -> torch.Tensor:
    """(..., 3) camera centres for (..., 2) yaw/pitch angles."""
    yaw, pitch = angles[..., 0], angles[..., 1]
    return radius * torch.stack(
        [torch.sin(pitch) * torch.cos(yaw), torch.cos(pitch), torch.sin(pitch) * torch.sin(yaw)],
        dim=-1,
    )


def look_at_origin(angles: torch.Tensor, radius: float = CAMERA_RADIUS) -> torch.Tensor:
    """(..., 4, 4) camera-to-world matrices (OpenCV axes) for cameras looking at the origin."""
    position = camera_position(angles, radius)
    forward = torch.nn.functional.normalize(-position, dim=-1)
    world_up = torch.zeros_like(forward)
    world_up[..., 1] = 1.0
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, world_up), dim=-1)
    down = torch.linalg.cross(forward, right)
    cam2world = torch.zeros(*angles.shape[:-1], 4, 4, dtype=angles.dtype, device=angles.device)
    cam2world[..., :3, 0] = right
    cam2world[..., :3, 1] = down
    cam2world[..., :3, 2] = forward
    cam2world[..., :3, 3] = position
    cam2world[..., 3, 3] = 1.0
    return cam2world


@float32  # ray geometry: bfloat16 would misplace points (models.precision)
def pixel_rays(
    cam2world: torch.Tensor, intrinsic: torch.Tensor, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions through pixel centres, row-major.

    cam2world: (B, 4, 4); intrinsic: (3, 3) or (B, 3, 3), normalised.
    Returns origins (B, R*R, 3) and directions (B, R*R, 3) in world coordinates.
    """
    batch = cam2world.shape[0]
    device, dtype = cam2world.device, cam2world.dtype
    centres = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # (R, R): row, column
    k = intrinsic.to(device=device, dtype=dtype).expand(batch, 3, 3)
    fx, fy, cx, cy = (k[:, 0, 0, None], k[:, 1, 1, None], k[:, 0, 2, None], k[:, 1, 2, None])
    x = (u.reshape(1, -1) - cx) / fx
    y = (v.reshape(1, -1) - cy) / fy
    directions_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (B, R*R, 3)
    directions = directions_cam @ cam2world[:, :3, :3].transpose(1, 2)
    directions = torch.nn.functional.normalize(directions, dim=-1)
    origins = cam2world[:, None, :3, 3].expand_as(directions)
    return origins, directions


def world_to_grid(points: torch.Tensor) -> torch.Tensor:
    """Normalised grid_sample coordinates (x -> W, y -> H, z -> D) for world points (..., 3).

    The volume box is [-1, 1]^3; row 0 of the volume is the top (y = +1), hence the flip of y.
    """
    return torch.stack([points[..., 0], -points[..., 1], points[..., 2]], dim=-1)


def unproject_depth(depth: torch.Tensor, cam2world: torch.Tensor, intrinsic: torch.Tensor
                    ) -> torch.Tensor:
    """(B, R*R, 3) world points of pixel centres at camera-space z `depth` (B, R, R)."""
    batch, resolution = depth.shape[0], depth.shape[-1]
    _, directions = pixel_rays(cam2world, intrinsic, resolution)  # unit length
    forward = cam2world[:, None, :3, 2]  # (B, 1, 3)
    t = depth.reshape(batch, -1) / (directions * forward).sum(-1)  # distance along each ray
    return cam2world[:, None, :3, 3] + t[..., None] * directions


def project(points: torch.Tensor, cam2world: torch.Tensor, intrinsic: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (B, M, 3) -> normalised image coordinates (B, M, 2) in [0, 1] and z (B, M).

    Coordinate (0, 0) is the top-left image corner, (1, 1) the bottom-right one.
    """
    rotation, position = cam2world[:, :3, :3], cam2world[:, :3, 3]
    local = (points - position[:, None]) @ rotation  # world -> camera (OpenCV axes)
    z = local[..., 2]
    k = intrinsic.expand(points.shape[0], 3, 3)
    u = k[:, None, 0, 0] * local[..., 0] / z + k[:, None, 0, 2]
    v = k[:, None, 1, 1] * local[..., 1] / z + k[:, None, 1, 2]
    return torch.stack([u, v], dim=-1), z
