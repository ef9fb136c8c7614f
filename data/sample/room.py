"""Procedural indoor scenes for the NYU-layout sample: a room with furniture, ray-cast in NumPy.

A room is an axis-aligned box (x right, y up, z forward, metres) seen from inside by a pinhole
camera with NYU's intrinsics; furniture is a few boxes standing on the floor. Every pixel's ray
is intersected with the room's walls and with each box (slab method); the nearest hit gives the
depth (the camera's z, as a depth sensor measures it), the surface normal and the material.
Shading is Lambert under a ceiling light plus ambient light, with plank and plaster textures,
so the image carries the cues a network can learn depth from (perspective of the floor, size
and occlusion of furniture, shading falloff).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- Camera: NYU Depth v2's Kinect colour camera (the toolbox's camera_params.m) ---------------
FOCAL_X, FOCAL_Y = 518.8579, 519.4696
CENTRE_X, CENTRE_Y = 325.5824, 253.7362
CAMERA_HEIGHT_RANGE = (1.0, 1.6)  # metres above the floor, a hand-held Kinect
YAW_RANGE = (-0.35, 0.35)  # radians
PITCH_RANGE = (-0.25, 0.05)  # radians, negative looks down

# --- Room and furniture (metres) ---------------------------------------------------------------
ROOM_WIDTH_RANGE = (3.0, 6.0)
ROOM_DEPTH_RANGE = (3.5, 7.0)  # ahead of the camera; the far wall stays within NYU's 10 m
ROOM_HEIGHT_RANGE = (2.4, 3.0)
BEHIND_CAMERA = 0.5  # the back wall is this far behind the camera
FURNITURE_COUNT = (2, 6)
FURNITURE_SIZE = ((0.4, 2.0), (0.4, 1.2), (0.4, 1.5))  # width, height, depth ranges
NEAREST_FURNITURE = 1.0  # no furniture closer than this ahead of the camera
WALL_MARGIN = 0.05

# --- Materials and light -----------------------------------------------------------------------
WALL, FLOOR, CEILING, FURNITURE = range(4)
WALL_COLOURS = np.array([[0.85, 0.82, 0.75], [0.7, 0.78, 0.82], [0.82, 0.72, 0.65], [0.9, 0.9, 0.88]])
FLOOR_COLOURS = np.array([[0.55, 0.38, 0.22], [0.45, 0.42, 0.4], [0.65, 0.5, 0.35]])
CEILING_COLOUR = np.array([0.95, 0.95, 0.95])
FURNITURE_COLOURS = np.array(
    [[0.35, 0.22, 0.12], [0.8, 0.8, 0.78], [0.2, 0.3, 0.5], [0.6, 0.15, 0.12], [0.3, 0.3, 0.3]]
)
PLANK_WIDTH = 0.18  # floor planks, metres
PLANK_CONTRAST = 0.12
PLASTER_CONTRAST = 0.04
AMBIENT = 0.35
DIFFUSE = 0.75
LIGHT_BELOW_CEILING = 0.1
LIGHT_FALLOFF = 0.08  # brightness / (1 + falloff * distance^2)
GAMMA = 1 / 2.2
NOISE_STD = 0.01  # sensor noise of the [0, 1] image
FAR = 1e9  # "no hit" distance


@dataclass(frozen=True)
class Room:
    """Room bounds (lo, hi corners), furniture boxes with colours, wall and floor colours."""

    lo: np.ndarray
    hi: np.ndarray
    boxes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    """(lo, hi, colour) of each piece of furniture."""
    wall: np.ndarray
    floor: np.ndarray


def sample_room(rng: np.random.Generator) -> Room:
    """A random room around a camera at x = z = 0, with furniture standing on the floor ahead."""
    width, depth, height = (rng.uniform(*r) for r in (ROOM_WIDTH_RANGE, ROOM_DEPTH_RANGE, ROOM_HEIGHT_RANGE))
    left = rng.uniform(0.3, 0.7) * width
    lo, hi = np.array([-left, 0.0, -BEHIND_CAMERA]), np.array([width - left, height, depth])
    boxes = []
    for _ in range(rng.integers(*FURNITURE_COUNT, endpoint=True)):
        size = np.array([rng.uniform(*r) for r in FURNITURE_SIZE])
        x = rng.uniform(lo[0] + WALL_MARGIN, hi[0] - WALL_MARGIN - size[0])
        z = rng.uniform(NEAREST_FURNITURE, max(NEAREST_FURNITURE, hi[2] - WALL_MARGIN - size[2]))
        corner = np.array([x, 0.0, z])
        boxes.append((corner, corner + size, FURNITURE_COLOURS[rng.integers(len(FURNITURE_COLOURS))]))
    wall = WALL_COLOURS[rng.integers(len(WALL_COLOURS))]
    return Room(lo, hi, boxes, wall, FLOOR_COLOURS[rng.integers(len(FLOOR_COLOURS))])


def camera_rays(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and ray directions (H*W, 3) whose camera-z component is 1, so a hit at
    parameter t lies at camera depth t."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    rays = np.stack([(u - CENTRE_X) / FOCAL_X, -(v - CENTRE_Y) / FOCAL_Y, np.ones_like(u)], -1).reshape(-1, 3)
    yaw, pitch = rng.uniform(*YAW_RANGE), rng.uniform(*PITCH_RANGE)
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    origin = np.array([0.0, rng.uniform(*CAMERA_HEIGHT_RANGE), 0.0], np.float32)
    return origin, rays @ (turn @ tilt).T.astype(np.float32)


def _slabs(origin: np.ndarray, rays: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Ray parameters (N, 3) at the lo and hi planes of each axis (+-inf where a ray is parallel)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.float32(1) / rays
        return (lo - origin).astype(np.float32) * inverse, (hi - origin).astype(np.float32) * inverse


def _room_hit(origin, rays, room: Room) -> tuple[np.ndarray, np.ndarray]:
    """Exit distance (N,) from inside the room and the axis (N,) of the wall hit."""
    t_lo, t_hi = _slabs(origin, rays, room.lo, room.hi)
    exits = np.where(t_lo > 0, t_lo, t_hi)
    axis = exits.argmin(1)
    return exits[np.arange(len(rays)), axis], axis


def _box_hit(origin, rays, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance (N,) into a box (FAR where missed) and the axis (N,) of the face hit."""
    t_lo, t_hi = _slabs(origin, rays, lo, hi)
    near, far = np.minimum(t_lo, t_hi), np.maximum(t_lo, t_hi)
    entry = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
    leave = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
    hit = (entry <= leave) & (entry > 0)
    return np.where(hit, entry, FAR), near.argmax(1)


def _albedo(room: Room, points: np.ndarray, material: np.ndarray, colour: np.ndarray, rng) -> np.ndarray:
    """Albedo (N, 3): planks on the floor, faint plaster on walls and ceiling, plain furniture."""
    albedo = colour.copy()
    floor = material == FLOOR
    planks = np.floor(points[floor, 0] / PLANK_WIDTH)
    albedo[floor] *= 1 + PLANK_CONTRAST * np.sin(planks * 12.9898)[:, None]
    plaster = (material == WALL) | (material == CEILING)
    albedo[plaster] *= 1 + PLASTER_CONTRAST * rng.standard_normal((int(plaster.sum()), 1))
    return albedo


def _shade(room: Room, points, normals, albedo) -> np.ndarray:
    """Linear radiance (N, 3) under ambient light and a light below the ceiling's centre."""
    light = np.array([(room.lo[0] + room.hi[0]) / 2, room.hi[1] - LIGHT_BELOW_CEILING, (room.lo[2] + room.hi[2]) / 2])
    to_light = light - points
    distance = np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip((normals * to_light).sum(1, keepdims=True) / distance, 0, None)
    return albedo * (AMBIENT + DIFFUSE * lambert / (1 + LIGHT_FALLOFF * distance**2))


def _surfaces(origin, rays, room: Room):
    """Nearest hit of every ray: distance (N,), normal (N, 3), material (N,), colour (N, 3)."""
    n = len(rays)
    t, axis = _room_hit(origin, rays, room)
    normals = np.zeros((n, 3), np.float32)
    normals[np.arange(n), axis] = -np.sign(rays[np.arange(n), axis])
    material = np.full(n, WALL)
    up = (axis == 1) & (rays[:, 1] < 0)
    material[up], material[(axis == 1) & ~up] = FLOOR, CEILING
    colour = _colour_table(room, material)
    for lo, hi, box_colour in room.boxes:
        entry, face = _box_hit(origin, rays, lo, hi)
        nearer = entry < t
        t = np.where(nearer, entry, t)
        normals[nearer] = 0
        normals[nearer, face[nearer]] = -np.sign(rays[nearer, face[nearer]])
        material[nearer], colour[nearer] = FURNITURE, box_colour
    return t, normals, material, colour


def _colour_table(room: Room, material: np.ndarray) -> np.ndarray:
    """Base colour (N, 3) of each ray's surface from its material."""
    table = np.stack([room.wall, room.floor, CEILING_COLOUR, np.zeros(3)])
    return table[material]


def render_room(rng: np.random.Generator, *, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A random room: image uint8 (H, W, 3) and depth float32 (H, W) metres (camera z), dense."""
    room = sample_room(rng)
    origin, rays = camera_rays(rng, height, width)
    t, normals, material, colour = _surfaces(origin, rays, room)
    points = origin + t[:, None] * rays
    albedo = _albedo(room, points, material, colour, rng)
    linear = _shade(room, points, normals, albedo) + NOISE_STD * rng.standard_normal((len(rays), 3))
    image = np.clip(np.clip(linear, 0, 1) ** GAMMA * 255 + 0.5, 0, 255).astype(np.uint8)
    return image.reshape(height, width, 3), t.reshape(height, width).astype(np.float32)
