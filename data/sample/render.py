"""Rendering of the sample dataset's scenes: ray casting, shading and LiDAR sampling.

:func:`render_frame` turns a :class:`~tiekd.data.sample.street.Scene` seen by a
:class:`~tiekd.data.sample.street.Camera` into an RGB image, a dense depth map and a sparse
LiDAR-like depth map. Depth is the z-distance along the optical axis in metres, as in KITTI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiekd.data.sample.street import (
    ASPHALT,
    CAMERA_HEIGHT,
    DASH_LENGTH,
    DASH_PERIOD,
    FACADE,
    FLOOR_HEIGHT,
    GLASS_COLOUR,
    GROUND,
    LINE_HALF_WIDTH,
    MARKING,
    PAVEMENT,
    WINDOW_PERIOD,
    WINDOW_SHARE,
    Camera,
    Scene,
    Solid,
)

# --- Clipping -------------------------------------------------------------------------------
# Nothing stands within NEAR_Z metres ahead of the camera, so solids are clipped there when
# their image windows are computed; corners closer than NEAR_PLANE to the image plane would
# project badly, and make the window the whole image.
NEAR_Z = 1.0
NEAR_PLANE = 0.1
# Ground hits near the horizon are cut at this distance (metres): they are fully hazed anyway,
# and farther world coordinates would overflow the texture lattice.
FAR_PLANE = 10_000.0

# --- Light ----------------------------------------------------------------------------------
UP = np.array([0.0, 1.0, 0.0], np.float32)  # the ground's normal
AMBIENT, DIFFUSE = 0.45, 0.65  # sky light, and sun light on a surface facing the sun
SHADOW_LIGHT = 0.25  # light left on the road under a car (contact shadow)
SKY_GRADIENT_ELEVATION = 0.6  # sine of the elevation where the sky reaches its zenith colour
HAZE_DISTANCE = 180.0  # metres over which a colour fades to 1/e of itself towards the sky's
# World-fixed value-noise textures, (cell in metres, amplitude): octaves whose cells are smaller
# than a pixel's footprint fade out, as a mip-mapped texture would, so the texture grows denser
# and fainter with distance (texture gradient).
TEXTURE_OCTAVES = ((0.12, 0.35), (1.5, 0.2))
MIN_COSINE = 0.05  # grazing views are clamped here when a pixel's footprint is estimated

# --- LiDAR (a Velodyne HDL-64E, as in KITTI) -------------------------------------------------
LIDAR_LINES = 64
# Elevations of the top and bottom scan lines: the sensor sees nothing above +2 degrees, so
# the top ~40 % of the image has no measurement; all lines fall inside the image.
LIDAR_TOP_ELEVATION = np.radians(2.0)
LIDAR_BOTTOM_ELEVATION = np.radians(-17.0)
LIDAR_COLUMN_STEP = 2  # azimuth resolution of about two camera pixels
LIDAR_DROPOUT = 0.25  # share of beams without a return
MAX_DEPTH = 80.0  # metres; KITTI's GT and the dense maps stop here


# --- Ray casting ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Hits:
    """The nearest surface along every pixel's ray."""

    depth: np.ndarray
    """(H, W) float32 ray parameter = depth along the optical axis in metres; inf for the sky."""
    part: np.ndarray
    """(H, W) int32: -1 sky, 0 ground, i + 1 the scene's solid i."""
    normal: np.ndarray
    """(3, H, W) float32 world surface normal."""


def ray_directions(camera: Camera) -> np.ndarray:
    """(3, H, W) float32 world directions through the pixel centres, with forward component 1.

    With this scaling a hit's ray parameter t is its depth along the optical axis.
    """
    u = ((np.arange(camera.width) + 0.5 - camera.width / 2) / camera.focal).astype(np.float32)
    v = ((np.arange(camera.height) + 0.5 - camera.height / 2) / camera.focal).astype(np.float32)
    right, down, forward = camera.axes.astype(np.float32)[:, :, None, None]
    return right * u + down * v[:, None] + forward


def solid_window(camera: Camera, solid: Solid) -> tuple[slice, slice] | None:
    """Image rows and columns that can see the solid (its projected bounding box), or None."""
    lo, hi = np.array(solid.lo) - solid.radius, np.array(solid.hi) + solid.radius
    lo[2] = max(lo[2], NEAR_Z)
    if hi[2] <= lo[2]:
        return None
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
    right, down, forward = ((corners - camera.centre) @ camera.axes.T).T
    if (forward <= NEAR_PLANE).any():
        return slice(0, camera.height), slice(0, camera.width)
    u = camera.focal * right / forward + camera.width / 2
    v = camera.focal * down / forward + camera.height / 2
    cols = slice(max(int(u.min()), 0), min(int(np.ceil(u.max())) + 1, camera.width))
    rows = slice(max(int(v.min()), 0), min(int(np.ceil(v.max())) + 1, camera.height))
    return (rows, cols) if rows.start < rows.stop and cols.start < cols.stop else None


def intersect_box(solid: Solid, origin: np.ndarray, rays: np.ndarray) -> tuple:
    """Slab test of rays (3, h, w) from origin: entry parameter t (h, w), inf on a miss, and the
    normal (3, h, w) of the face entered."""
    entry, exit_ = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            to_lo = float(solid.lo[k] - origin[k]) / rays[k]
            to_hi = float(solid.hi[k] - origin[k]) / rays[k]
            entry.append(np.minimum(to_lo, to_hi))
            exit_.append(np.maximum(to_lo, to_hi))
    near = np.maximum(np.maximum(entry[0], entry[1]), entry[2])
    far = np.minimum(np.minimum(exit_[0], exit_[1]), exit_[2])
    t = np.where((near <= far) & (near > 0), near, np.inf)
    normal = np.stack([np.where(entry[k] == near, -np.sign(rays[k]), 0.0) for k in range(3)])
    return t, normal


def intersect_sphere(solid: Solid, origin: np.ndarray, rays: np.ndarray) -> tuple:
    """Nearest root of |origin + t ray - centre| = radius for rays (3, h, w): t (h, w), inf on a
    miss, and the normal (3, h, w) there."""
    offset = (origin - np.array(solid.lo)).astype(np.float32)
    a = (rays * rays).sum(axis=0)
    half_b = offset[0] * rays[0] + offset[1] * rays[1] + offset[2] * rays[2]
    disc = half_b * half_b - a * np.float32(offset @ offset - solid.radius**2)
    t = (-half_b - np.sqrt(np.maximum(disc, 0.0))) / a
    t = np.where((disc > 0) & (t > 0), t, np.inf)
    hit_offset = offset[:, None, None] + np.where(np.isfinite(t), t, 0.0) * rays
    normal = hit_offset / np.float32(solid.radius)
    return t, normal


def cast_rays(scene: Scene, camera: Camera, rays: np.ndarray) -> Hits:
    """Nearest hit of every pixel's ray with the ground plane and the solids."""
    with np.errstate(divide="ignore"):
        depth = np.where(rays[1] < 0, np.minimum(-CAMERA_HEIGHT / rays[1], FAR_PLANE), np.inf)
    part = np.where(np.isfinite(depth), 0, -1).astype(np.int32)
    normal = np.zeros((3, camera.height, camera.width), np.float32)
    normal[1] = 1.0
    for index, solid in enumerate(scene.solids, start=1):
        window = solid_window(camera, solid)
        if window is None:
            continue
        intersect = intersect_sphere if solid.radius else intersect_box
        vector_window = (slice(None), *window)
        t, solid_normal = intersect(solid, camera.centre, rays[vector_window])
        closer = t < depth[window]
        depth[window] = np.where(closer, t, depth[window])
        part[window] = np.where(closer, index, part[window])
        normal[vector_window] = np.where(closer, solid_normal, normal[vector_window])
    return Hits(depth, part, normal)


# --- Shading --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Surfaces:
    """The surface points seen by some pixels, flattened to N points."""

    index: np.ndarray
    """(N,) flat pixel index."""
    part: np.ndarray
    """(N,) 0 ground, i + 1 solid i."""
    points: np.ndarray
    """(3, N) world position in metres."""
    normal: np.ndarray
    """(3, N) world normal."""
    distance: np.ndarray
    """(N,) distance from the camera in metres."""
    footprint: np.ndarray
    """(N,) size in metres of the surface patch one pixel covers (for texture filtering)."""

    @classmethod
    def of(cls, camera: Camera, hits: Hits, rays: np.ndarray, index: np.ndarray) -> Surfaces:
        """The surfaces seen by the flat pixels ``index``; rays (3, H, W)."""
        # np.take keeps each coordinate contiguous; rays[:, index] would interleave them.
        rays = np.take(rays.reshape(3, -1), index, axis=1)
        normal = np.take(hits.normal.reshape(3, -1), index, axis=1)
        depth = hits.depth.ravel()[index]
        points = camera.centre.astype(np.float32)[:, None] + depth * rays
        ray_length = np.sqrt((rays * rays).sum(axis=0))
        distance = depth * ray_length
        # A slanted view stretches the patch; the square root splits the difference between
        # its short and long sides, as anisotropic texture filtering does.
        cosine = np.abs((normal * rays).sum(axis=0)) / ray_length
        footprint = distance / (camera.focal * np.sqrt(np.maximum(cosine, MIN_COSINE)))
        return cls(index, hits.part.ravel()[index], points, normal, distance, footprint)


def _hash(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """uint32 lattice points (i, j) to pseudo-random floats in [0, 1) (a small avalanche hash)."""
    x = i * np.uint32(374761393) + j * np.uint32(668265263) + np.uint32(seed)
    x = (x ^ (x >> np.uint32(13))) * np.uint32(1274126177)
    return (x ^ (x >> np.uint32(16))).astype(np.float32) / np.float32(2**32)


def value_noise(a: np.ndarray, b: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1) of surface coordinates (a, b) in metres, on a lattice of ``cell``."""
    ga, gb = a / np.float32(cell), b / np.float32(cell)
    ia, ib = np.floor(ga), np.floor(gb)
    fa, fb = ga - ia, gb - ib
    fa, fb = fa * fa * (3 - 2 * fa), fb * fb * (3 - 2 * fb)  # smoothstep
    # Negative lattice indices wrap to uint32; i + 1 wraps the same way, so neighbours stay so.
    ia, ib = ia.astype(np.int32).astype(np.uint32), ib.astype(np.int32).astype(np.uint32)
    ia1, ib1 = ia + np.uint32(1), ib + np.uint32(1)
    top = _hash(ia, ib, seed)
    top += (_hash(ia1, ib, seed) - top) * fa
    bottom = _hash(ia, ib1, seed)
    bottom += (_hash(ia1, ib1, seed) - bottom) * fa
    return top + (bottom - top) * fb


def texture(a: np.ndarray, b: np.ndarray, footprint: np.ndarray, seed: int) -> np.ndarray:
    """(N,) brightness factor about 1 of a texture fixed to surface coordinates (a, b) in metres.

    footprint (N,): metres one pixel covers; octaves with cells smaller than that fade out.
    """
    factor = np.ones_like(a)
    for octave, (cell, amplitude) in enumerate(TEXTURE_OCTAVES):
        fade = np.clip(1.5 - footprint / np.float32(cell), 0.0, 1.0)
        factor += amplitude * fade * (value_noise(a, b, cell, seed + octave) - 0.5)
    return factor


def _periodic(value: np.ndarray, period: float) -> np.ndarray:
    """value modulo period, in [0, period) (faster than np.mod on float32)."""
    return value - np.floor(value / np.float32(period)) * np.float32(period)


def ground_albedo(scene: Scene, x: np.ndarray, z: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """(N, 3) albedo at ground points (x, z): asphalt with lane markings, sidewalk, verge."""
    lateral = np.abs(x - np.float32(scene.road_centre))
    zone = (lateral >= scene.road_half_width).astype(np.intp)  # 0 road, 1 sidewalk, 2 verge
    zone += lateral >= scene.road_half_width + scene.sidewalk_width
    albedo = np.stack([ASPHALT, PAVEMENT, scene.verge])[zone]
    albedo *= texture(x, z, footprint, scene.texture_seed)[:, None]
    dashed_centre = (lateral < LINE_HALF_WIDTH) & (_periodic(z, DASH_PERIOD) < DASH_LENGTH)
    lane_edges = np.abs(lateral - np.float32(scene.lane_width)) < LINE_HALF_WIDTH
    albedo[dashed_centre | lane_edges] = MARKING
    return albedo


def solid_albedo(scene: Scene, solids: Surfaces) -> np.ndarray:
    """(N, 3) albedo at points on solids: their colour, textured; facades get windows."""
    colours = np.array([solid.colour for solid in scene.solids], np.float32)[solids.part - 1]
    facade = np.array([solid.material == FACADE for solid in scene.solids])[solids.part - 1]
    # Coordinates on a vertical face: z on faces looking sideways, x on faces looking ahead.
    along = np.where(np.abs(solids.normal[0]) > 0.5, solids.points[2], solids.points[0])
    height = solids.points[1]
    albedo = colours * texture(along, height, solids.footprint, scene.texture_seed + 2)[:, None]
    window = (
        facade
        & (_periodic(along, WINDOW_PERIOD) > (1 - WINDOW_SHARE) * WINDOW_PERIOD)
        & (_periodic(height, FLOOR_HEIGHT) > (1 - WINDOW_SHARE) * FLOOR_HEIGHT)
        & (height > FLOOR_HEIGHT)  # shops and doors on the ground floor: no windows drawn
    )
    albedo[window] = GLASS_COLOUR
    return albedo


def contact_shadows(scene: Scene, camera: Camera, hits: Hits, rays: np.ndarray) -> np.ndarray:
    """(H, W) bool: ground pixels inside one of the scene's shadow rectangles (under cars)."""
    shadow = np.zeros(hits.part.shape, dtype=bool)
    for x0, x1, z0, z1 in scene.shadows:
        window = solid_window(camera, Solid((x0, 0.0, z0), (x1, 0.0, z1), GROUND, (0, 0, 0)))
        if window is None:
            continue
        depth = hits.depth[window]
        x, z = depth * rays[0][window], depth * rays[2][window]
        inside = (x > x0) & (x < x1) & (z > z0) & (z < z1)
        shadow[window] |= inside & (hits.part[window] == 0)
    return shadow


def sun_light(scene: Scene, normal: np.ndarray) -> np.ndarray:
    """(N,) light on surfaces with normals (3, N): ambient plus Lambertian sun."""
    sun = scene.sun.astype(np.float32)
    cosine = sun[0] * normal[0] + sun[1] * normal[1] + sun[2] * normal[2]
    return AMBIENT + DIFFUSE * np.clip(cosine, 0.0, None)


def aerial_perspective(scene: Scene, colour: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Colours (N, 3) seen from distances (N,) in metres, faded towards the horizon's colour."""
    haze = (1 - np.exp(-distance / np.float32(HAZE_DISTANCE)))[:, None]
    return colour + (scene.sky[0].astype(np.float32) - colour) * haze


def sky_colour(scene: Scene, rays: np.ndarray) -> np.ndarray:
    """(N, 3) colour of the sky along rays (3, N): from the horizon's to the zenith's."""
    elevation = rays[1] / np.sqrt((rays * rays).sum(axis=0))
    weight = np.sqrt(np.clip(elevation / SKY_GRADIENT_ELEVATION, 0.0, 1.0))[:, None]
    horizon, zenith = (colour.astype(np.float32) for colour in scene.sky)
    return horizon + (zenith - horizon) * weight


def shade(scene: Scene, camera: Camera, hits: Hits, rays: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image: the sky, and lit surfaces hazed with distance."""
    part = hits.part.ravel()
    image = np.empty((len(part), 3), np.float32)
    sky = np.flatnonzero(part < 0)
    image[sky] = sky_colour(scene, np.take(rays.reshape(3, -1), sky, axis=1))
    ground = Surfaces.of(camera, hits, rays, np.flatnonzero(part == 0))
    shadow = contact_shadows(scene, camera, hits, rays).ravel()[ground.index]
    light = np.where(shadow, np.float32(SHADOW_LIGHT), sun_light(scene, UP[:, None]))
    colour = ground_albedo(scene, ground.points[0], ground.points[2], ground.footprint)
    image[ground.index] = aerial_perspective(scene, colour * light[:, None], ground.distance)
    solids = Surfaces.of(camera, hits, rays, np.flatnonzero(part > 0))
    colour = solid_albedo(scene, solids) * sun_light(scene, solids.normal)[:, None]
    image[solids.index] = aerial_perspective(scene, colour, solids.distance)
    image *= np.float32(scene.exposure * 255)
    image = np.clip(image + 0.5, 0.0, 255.0).astype(np.uint8)  # + 0.5 rounds to nearest
    return image.reshape(camera.height, camera.width, 3)


# --- Depth maps -----------------------------------------------------------------------------
def dense_depth(hits: Hits) -> np.ndarray:
    """(H, W) depth in metres of every surface up to MAX_DEPTH; 0 for the sky and beyond."""
    return np.where(hits.depth <= MAX_DEPTH, hits.depth, 0.0).astype(np.float32)


def lidar_mask(rays: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: the pixels a 64-line scanner at the camera measures, for rays (3, H, W).

    A scan line is a cone of constant elevation; it falls on the pixels whose ray is just below
    it while the ray of the pixel above is not. Along a line every LIDAR_COLUMN_STEP-th column
    is measured (staggered from line to line), and some beams return nothing.
    """
    elevation = np.arctan2(rays[1], np.hypot(rays[0], rays[2]))
    spacing = (LIDAR_TOP_ELEVATION - LIDAR_BOTTOM_ELEVATION) / (LIDAR_LINES - 1)
    line = np.floor((LIDAR_TOP_ELEVATION - elevation) / spacing).astype(np.int64)
    mask = np.zeros(line.shape, dtype=bool)
    mask[1:] = (line[1:] != line[:-1]) & (line[1:] >= 0) & (line[1:] < LIDAR_LINES)
    mask &= (np.arange(line.shape[1]) + line) % LIDAR_COLUMN_STEP == 0
    return mask & (rng.random(line.shape, dtype=np.float32) >= LIDAR_DROPOUT)


def render_frame(scene: Scene, camera: Camera, rng: np.random.Generator) -> tuple:
    """Image (H, W, 3) uint8, dense depth (H, W) and sparse LiDAR depth (H, W) in metres, 0 = none.

    The sparse depth equals the dense depth wherever it is set.
    """
    rays = ray_directions(camera)
    hits = cast_rays(scene, camera, rays)
    dense = dense_depth(hits)
    sparse = np.where(lidar_mask(rays, rng), dense, np.float32(0.0))
    return shade(scene, camera, hits, rays), dense, sparse
