"""A small, deterministic, procedural dataset in KITTI's layout, for tests, benchmarks and the demo.

tiekd cannot download KITTI, so :func:`write_sample_dataset` ray-casts street scenes and writes
them exactly where the real readers look (see :mod:`tiekd.data.kitti`)::

    OUT/raw/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame>.png        RGB at the real size
    OUT/gt/{train,val}/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/<frame>.png
                                                              sparse LiDAR-like depth (uint16)
    OUT/dense/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/<frame>.png  dense depth
    OUT/splits/train.txt, OUT/splits/test.txt     ``RGB_REL GT_REL|None FOCAL`` records

The scenes carry the monocular depth cues a network learns from: a ground plane in perspective
whose texture is fixed in world coordinates (texture gradient), a road with lane markings,
facades at random lateral distances, cars, pedestrians and poles of known size standing on the
ground (size and contact cues), shading by surface normal, and haze towards the sky colour with
distance (aerial perspective). Depth is the z-distance along the optical axis in metres, as in
KITTI. The same seed gives byte-identical files.

World frame: X right, Y up, Z forward, in metres; the road is the plane Y = 0 and the camera
sits at (0, CAMERA_HEIGHT, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tiekd.data.kitti import IMAGE_SIZES, write_depth_png
from tiekd.pipeline.errors import ConfigError

# --- Dataset layout -------------------------------------------------------------------------
# Focal length in pixels of the left colour camera per recording date (KITTI raw calibration,
# P_rect_02[0, 0]); the published Eigen split files carry the same numbers.
FOCALS = {
    "2011_09_26": 721.5377,
    "2011_09_28": 707.0493,
    "2011_09_29": 718.3351,
    "2011_09_30": 707.0912,
    "2011_10_03": 718.856,
}
DATES = tuple(IMAGE_SIZES)
# Frames cycle over the dates, then over DRIVES_PER_DATE drives of each; test frames come from
# other drives than training frames, as in the Eigen split.
DRIVES_PER_DATE = 2
FIRST_DRIVE = {"train": 1, "test": 11}
# Frame numbers of a sparse subsample of the drives; KITTI's first annotated frame is 5.
FIRST_FRAME = 5
FRAME_STEP = 10
# Every NO_GT_PERIOD-th test record, from the second on, has GT ``None`` (45 of the 697 Eigen
# test records have none); so at least MIN_TEST test frames are needed.
NO_GT_PERIOD = 7
NO_GT_OFFSET = 1
MIN_TEST = 2
# data_depth_annotated is downloaded as train/ and val/ folders.
GT_FOLDER = {"train": "train", "test": "val"}
# Seed stream of each split, so that train and test frames never share a scene.
SPLIT_STREAM = {"train": 0, "test": 1}
# zlib level of the RGB PNGs: level 1 writes these textured images about three times faster
# than the default 6, for files about 20 % larger.
RGB_PNG_COMPRESSION = 1

# --- Camera ---------------------------------------------------------------------------------
# Height of KITTI's cameras above the road (Geiger et al., "Vision meets robotics", IJRR 2013).
CAMERA_HEIGHT = 1.65
# KITTI's horizon lies near 45 % of the image height; with the principal point at the image
# centre the camera is therefore pitched slightly down.
HORIZON_ROW = 0.45
# Standard deviations of the random pitch and roll (radians): the car sways over bumps.
PITCH_STD = np.radians(0.4)
ROLL_STD = np.radians(0.4)
# Nothing stands within NEAR_Z metres ahead of the camera, so solids are clipped there when
# their image windows are computed; corners closer than NEAR_PLANE to the image plane would
# project badly, and make the window the whole image.
NEAR_Z = 1.0
NEAR_PLANE = 0.1
# Ground hits near the horizon are cut at this distance (metres): they are fully hazed anyway,
# and farther world coordinates would overflow the texture lattice.
FAR_PLANE = 10_000.0

# --- Ground ---------------------------------------------------------------------------------
# KITTI's roads are mostly two-lane German streets (metres).
LANE_WIDTH_RANGE = (3.0, 3.8)
LANE_POSITION_STD = 0.2  # how far the camera strays from its lane's centre
PARKING_WIDTH = 2.0  # parking lane along each kerb in towns
SHOULDER_WIDTH = 0.3  # asphalt beyond the edge line on rural roads
SIDEWALK_WIDTH_RANGE = (1.5, 4.0)
LINE_HALF_WIDTH = 0.06
DASH_LENGTH, DASH_PERIOD = 3.0, 9.0  # dashed centre line
ASPHALT = np.array([0.30, 0.30, 0.31], np.float32)
PAVEMENT = np.array([0.55, 0.53, 0.50], np.float32)
GRASS = np.array([0.24, 0.36, 0.14], np.float32)
MARKING = np.array([0.85, 0.85, 0.82], np.float32)
UP = np.array([0.0, 1.0, 0.0], np.float32)  # the ground's normal

# --- Objects of known size (metres; the size cue) ----------------------------------------------
# A car is a body box on four tyres with a glass cabin box on top.
CAR_SIZE = np.array([1.8, 1.5, 4.0])  # width, height, length
CAR_SIZE_JITTER = 0.08  # relative
CAR_CLEARANCE = 0.3  # the body's bottom above the road
BELTLINE = 0.62  # top of the body, as a fraction of the car's height
CABIN_SPAN = (0.25, 0.8)  # start and end of the cabin, as fractions of the car's length
CABIN_NARROWING = 0.9
TYRE_WIDTH, TYRE_DIAMETER = 0.26, 0.62
AXLES = (0.18, 0.78)  # as fractions of the car's length
CAR_DEPTH_RANGE = (5.0, 70.0)  # rear of the car ahead of the camera
CAR_GAP = 1.0  # at least this much between cars in a lane
CAR_LATERAL_STD = 0.15  # how far cars stray from their lane's centre
SHADOW_MARGIN = 0.1  # contact shadows reach this far beyond the car's outline
PLACEMENT_TRIES = 10  # a car that finds no free place in its lane is left out
OWN_LANE_CLEAR = 10.0  # nothing in the camera's own lane closer than this
CAR_COLOURS = np.array(
    [[0.85, 0.85, 0.85], [0.55, 0.56, 0.58], [0.1, 0.1, 0.11], [0.6, 0.1, 0.08], [0.1, 0.2, 0.5]]
)
# A pedestrian is legs, torso and head: (half width, top as a fraction of the height, half depth).
PEDESTRIAN_HEIGHT = 1.75
PEDESTRIAN_PARTS = ((0.17, 0.5, 0.12), (0.23, 0.86, 0.14), (0.1, 1.0, 0.1))
PEDESTRIAN_DEPTH_RANGE = (5.0, 45.0)
MAX_PEDESTRIANS = 4
PEDESTRIAN_SPREAD = 1.0  # across the sidewalk from the furniture line
SIZE_JITTER = (0.9, 1.08)  # relative size of people, poles and trees
# Poles (street lights, signs) and trees stand on the sidewalks, every few metres.
POLE_WIDTH = 0.14
POLE_HEIGHT_RANGE = (3.0, 8.0)
SIGN_CHANCE = 0.4
SIGN_BOX = (0.35, 2.2, 2.9, 0.03)  # half width, bottom, top, thickness
SIGN_COLOURS = np.array([[0.1, 0.25, 0.6], [0.7, 0.1, 0.1], [0.9, 0.8, 0.1]])
TRUNK_WIDTH = 0.3
TRUNK_HEIGHT_RANGE = (2.2, 4.0)
CROWN_RADIUS_RANGE = (1.2, 3.0)
FIRST_FURNITURE_RANGE = (3.0, 20.0)
FURNITURE_SPACING = (8.0, 30.0)
FURNITURE_INSET = 0.5  # from the kerb onto the sidewalk
# Buildings line the street in stretches; windows every WINDOW_PERIOD, storeys of FLOOR_HEIGHT.
FIRST_BUILDING_RANGE = (-10.0, 5.0)  # where the first building starts (the camera is at z = 0)
BUILDING_LENGTH_RANGE = (8.0, 30.0)
BUILDING_DEPTH_RANGE = (8.0, 15.0)
BUILDING_SPACING = (0.0, 4.0)
ROOF_HEIGHT_RANGE = (0.5, 2.0)
FLOOR_HEIGHT = 3.2
WINDOW_PERIOD = 2.8
WINDOW_SHARE = 0.65  # of a storey's height and of a window period
STREET_LENGTH = 200.0  # how far ahead buildings and street furniture are placed
FACADE_COLOURS = np.array(
    [[0.7, 0.62, 0.5], [0.55, 0.5, 0.48], [0.75, 0.72, 0.66], [0.55, 0.3, 0.22], [0.45, 0.47, 0.5]]
)
COLOUR_JITTER = (0.85, 1.15)  # relative brightness of facades and trees

# Materials, each solid has one; their constant albedos.
GROUND, FACADE, PAINT, GLASS, RUBBER, CLOTH, SKIN, METAL, BARK, FOLIAGE = range(10)
GLASS_COLOUR = (0.1, 0.12, 0.16)
RUBBER_COLOUR = (0.05, 0.05, 0.05)
TROUSERS_COLOUR = (0.15, 0.15, 0.2)
SKIN_COLOUR = (0.8, 0.6, 0.45)
METAL_COLOUR = (0.45, 0.46, 0.48)
BARK_COLOUR = (0.3, 0.22, 0.15)
FOLIAGE_COLOUR = (0.18, 0.33, 0.12)

# --- Light ----------------------------------------------------------------------------------
AMBIENT, DIFFUSE = 0.45, 0.65  # sky light, and sun light on a surface facing the sun
SHADOW_LIGHT = 0.25  # light left on the road under a car (contact shadow)
SUN_ELEVATION_RANGE = (0.3, 1.1)  # radians
SKY_HORIZON = np.array([0.78, 0.82, 0.86])
SKY_ZENITH = np.array([0.35, 0.52, 0.8])
SKY_JITTER = ((0.9, 1.05), (0.85, 1.1))  # relative brightness of the horizon and the zenith
SKY_GRADIENT_ELEVATION = 0.6  # sine of the elevation where the sky reaches its zenith colour
HAZE_DISTANCE = 180.0  # metres over which a colour fades to 1/e of itself towards the sky's
EXPOSURE_RANGE = (0.85, 1.15)
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


@dataclass(frozen=True)
class StreetKind:
    """How one kind of street is furnished."""

    cars: tuple[int, int]
    """Least and most cars."""
    parking: bool
    """Whether parking lanes line both kerbs."""
    building_gap: float
    """Chance that a stretch of street has no building."""
    setback: float
    """Most metres a facade stands back from the sidewalk."""
    storeys: tuple[int, int]
    tree_share: float
    """Share of trees among the poles and trees."""
    verge: np.ndarray
    """Albedo of the ground beyond the sidewalks."""


STREET_KINDS = {
    "city": StreetKind(
        cars=(3, 9), parking=True, building_gap=0.1, setback=1.0, storeys=(2, 7),
        tree_share=0.0, verge=PAVEMENT,
    ),
    "residential": StreetKind(
        cars=(2, 7), parking=True, building_gap=0.45, setback=8.0, storeys=(1, 3),
        tree_share=0.6, verge=GRASS,
    ),
    "rural": StreetKind(
        cars=(0, 4), parking=False, building_gap=0.8, setback=25.0, storeys=(1, 3),
        tree_share=0.6, verge=GRASS,
    ),
}


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, CAMERA_HEIGHT, 0) with its principal point at the image centre."""

    height: int
    width: int
    focal: float
    """Focal length in pixels."""
    axes: np.ndarray
    """(3, 3) world directions of the image's right, down and forward axes, one a row."""

    @property
    def centre(self) -> np.ndarray:
        return np.array([0.0, CAMERA_HEIGHT, 0.0])


@dataclass(frozen=True)
class Solid:
    """An axis-aligned box between corners lo and hi, or a sphere of ``radius`` around lo = hi."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: int
    colour: tuple[float, float, float]
    radius: float = 0.0


@dataclass(frozen=True)
class Scene:
    """A street: the ground's layout, the solids on it, the light."""

    road_centre: float
    """X of the road's centre line; the camera drives in the right-hand lane."""
    lane_width: float
    road_half_width: float
    """Half the width between the kerbs."""
    sidewalk_width: float
    verge: np.ndarray
    """Albedo beyond the sidewalks."""
    solids: list[Solid]
    shadows: list[tuple[float, float, float, float]]
    """Ground rectangles (x0, x1, z0, z1) in a contact shadow."""
    sun: np.ndarray
    """(3,) unit vector towards the sun."""
    sky: tuple[np.ndarray, np.ndarray]
    """Sky colours at the horizon and at the zenith."""
    exposure: float
    texture_seed: int


# --- Scene sampling -------------------------------------------------------------------------
def sample_camera(rng: np.random.Generator, *, height: int, width: int, focal: float) -> Camera:
    """A camera with KITTI's horizon row and a slight random pitch and roll."""
    pitch = np.arctan((HORIZON_ROW - 0.5) * height / focal) + rng.normal(0.0, PITCH_STD)
    roll = rng.normal(0.0, ROLL_STD)
    right = np.array([1.0, 0.0, 0.0])
    down = np.array([0.0, -np.cos(pitch), np.sin(pitch)])
    forward = np.array([0.0, np.sin(pitch), np.cos(pitch)])
    rolled_right = np.cos(roll) * right + np.sin(roll) * down
    rolled_down = -np.sin(roll) * right + np.cos(roll) * down
    return Camera(height, width, focal, np.stack([rolled_right, rolled_down, forward]))


def _box(x: tuple, y: tuple, z: tuple, material: int, colour) -> Solid:
    """A box spanning the (low, high) intervals x, y and z."""
    return Solid((x[0], y[0], z[0]), (x[1], y[1], z[1]), material, tuple(map(float, colour)))


def _car(x: float, z: float, rng: np.random.Generator) -> list[Solid]:
    """A car centred at lateral position x with its rear at depth z."""
    width, height, length = CAR_SIZE * (1 + rng.uniform(-CAR_SIZE_JITTER, CAR_SIZE_JITTER, 3))
    half, belt = width / 2, BELTLINE * height
    paint = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
    cabin_half = CABIN_NARROWING * half
    cabin = (z + CABIN_SPAN[0] * length, z + CABIN_SPAN[1] * length)
    parts = [
        _box((x - half, x + half), (CAR_CLEARANCE, belt), (z, z + length), PAINT, paint),
        _box((x - cabin_half, x + cabin_half), (belt, height), cabin, GLASS, GLASS_COLOUR),
    ]
    for axle in AXLES:
        axle_z = z + axle * length
        for side in (-1, 1):
            tyre_x = x + side * (half - TYRE_WIDTH)
            tyre = ((tyre_x - TYRE_WIDTH / 2, tyre_x + TYRE_WIDTH / 2), (0.0, TYRE_DIAMETER))
            tyre_z = (axle_z - TYRE_DIAMETER / 2, axle_z + TYRE_DIAMETER / 2)
            parts.append(_box(*tyre, tyre_z, RUBBER, RUBBER_COLOUR))
    return parts


def _pedestrian(x: float, z: float, rng: np.random.Generator) -> list[Solid]:
    """Legs, torso and head of a person standing at (x, z)."""
    height = PEDESTRIAN_HEIGHT * rng.uniform(*SIZE_JITTER)
    looks = [(CLOTH, TROUSERS_COLOUR), (CLOTH, rng.uniform(0.1, 0.8, 3)), (SKIN, SKIN_COLOUR)]
    parts, bottom = [], 0.0
    for (half_width, top, half_depth), (material, colour) in zip(PEDESTRIAN_PARTS, looks):
        x_span, z_span = (x - half_width, x + half_width), (z - half_depth, z + half_depth)
        parts.append(_box(x_span, (bottom, top * height), z_span, material, colour))
        bottom = top * height
    return parts


def _pole(x: float, z: float, rng: np.random.Generator) -> list[Solid]:
    """A street-light or sign pole, some with a sign facing the camera."""
    height, half = rng.uniform(*POLE_HEIGHT_RANGE), POLE_WIDTH / 2
    parts = [_box((x - half, x + half), (0.0, height), (z - half, z + half), METAL, METAL_COLOUR)]
    if rng.random() < SIGN_CHANCE:
        sign_half, bottom, top, thickness = SIGN_BOX
        colour = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
        x_span, z_span = (x - sign_half, x + sign_half), (z - half - thickness, z - half)
        parts.append(_box(x_span, (bottom, top), z_span, PAINT, colour))
    return parts


def _tree(x: float, z: float, rng: np.random.Generator) -> list[Solid]:
    """A trunk with a round crown resting on it."""
    trunk, radius = rng.uniform(*TRUNK_HEIGHT_RANGE), rng.uniform(*CROWN_RADIUS_RANGE)
    centre = (x, trunk + radius, z)
    half = TRUNK_WIDTH / 2
    colour = np.array(FOLIAGE_COLOUR) * rng.uniform(*COLOUR_JITTER)
    return [
        _box((x - half, x + half), (0.0, trunk + radius), (z - half, z + half), BARK, BARK_COLOUR),
        Solid(centre, centre, FOLIAGE, tuple(map(float, colour)), float(radius)),
    ]


def _buildings(side: int, kerb: float, kind: StreetKind, rng: np.random.Generator) -> list[Solid]:
    """Buildings along one side of the street (-1 left, +1 right), fronts at |x| >= kerb."""
    solids, z = [], rng.uniform(*FIRST_BUILDING_RANGE)
    while z < STREET_LENGTH:
        length = rng.uniform(*BUILDING_LENGTH_RANGE)
        if rng.random() >= kind.building_gap:
            front = kerb + rng.uniform(0.0, kind.setback)
            back = front + rng.uniform(*BUILDING_DEPTH_RANGE)
            storeys = rng.integers(*kind.storeys, endpoint=True)
            height = FLOOR_HEIGHT * storeys + rng.uniform(*ROOF_HEIGHT_RANGE)
            colour = FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))] * rng.uniform(*COLOUR_JITTER)
            x_span = tuple(sorted((side * front, side * back)))
            solids.append(_box(x_span, (0.0, height), (z, z + length), FACADE, colour))
        z += length + rng.uniform(*BUILDING_SPACING)
    return solids


def _free_depth(taken: list, low: float, rng: np.random.Generator) -> float | None:
    """A depth in CAR_DEPTH_RANGE, at least ``low``, where a car overlaps no taken interval."""
    length = CAR_SIZE[2] * (1 + CAR_SIZE_JITTER)
    for _ in range(PLACEMENT_TRIES):
        z = rng.uniform(max(low, CAR_DEPTH_RANGE[0]), CAR_DEPTH_RANGE[1])
        if all(z + length + CAR_GAP < start or z > end + CAR_GAP for start, end in taken):
            taken.append((z, z + length))
            return z
    return None


def _cars(kind: StreetKind, lanes: dict[str, float], rng: np.random.Generator) -> tuple[list, list]:
    """Parked and moving cars in the lanes (lane name: x of its centre); parts and shadows."""
    solids, shadows = [], []
    taken = {name: [] for name in lanes}
    for _ in range(rng.integers(*kind.cars, endpoint=True)):
        lane = str(rng.choice(list(lanes)))
        z = _free_depth(taken[lane], OWN_LANE_CLEAR if lane == "own" else 0.0, rng)
        if z is None:
            continue
        x = lanes[lane] + rng.normal(0.0, CAR_LATERAL_STD)
        solids += _car(x, z, rng)
        half = CAR_SIZE[0] / 2 + SHADOW_MARGIN
        shadows.append((x - half, x + half, z - SHADOW_MARGIN, z + CAR_SIZE[2] + SHADOW_MARGIN))
    return solids, shadows


def _street_furniture(kind: StreetKind, edges: tuple, rng: np.random.Generator) -> list[Solid]:
    """Poles, trees and pedestrians on the sidewalks starting at lateral edges (left, right)."""
    solids, z = [], rng.uniform(*FIRST_FURNITURE_RANGE)
    while z < STREET_LENGTH:
        x = edges[rng.integers(2)]
        solids += _tree(x, z, rng) if rng.random() < kind.tree_share else _pole(x, z, rng)
        z += rng.uniform(*FURNITURE_SPACING)
    for _ in range(rng.integers(0, MAX_PEDESTRIANS, endpoint=True)):
        side = rng.integers(2)
        # Outwards from the edge, onto the sidewalk.
        x = edges[side] + (2 * side - 1) * rng.uniform(0.0, PEDESTRIAN_SPREAD)
        solids += _pedestrian(x, rng.uniform(*PEDESTRIAN_DEPTH_RANGE), rng)
    return solids


def _sun_and_sky(rng: np.random.Generator) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A unit vector towards the sun, and the sky's colours at the horizon and the zenith."""
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(*SUN_ELEVATION_RANGE)
    horizontal = np.cos(elevation)
    sun = np.array([horizontal * np.sin(azimuth), np.sin(elevation), horizontal * np.cos(azimuth)])
    horizon_jitter, zenith_jitter = SKY_JITTER
    sky = (SKY_HORIZON * rng.uniform(*horizon_jitter), SKY_ZENITH * rng.uniform(*zenith_jitter))
    return sun, sky


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random street: road, sidewalks, buildings, cars, pedestrians, poles, trees, sun, sky."""
    kind = STREET_KINDS[str(rng.choice(list(STREET_KINDS)))]
    lane = rng.uniform(*LANE_WIDTH_RANGE)
    # The camera drives in the right-hand lane, so the road's centre is on its left.
    centre = -lane / 2 + rng.normal(0.0, LANE_POSITION_STD)
    half_width = lane + (PARKING_WIDTH if kind.parking else SHOULDER_WIDTH)
    sidewalk = rng.uniform(*SIDEWALK_WIDTH_RANGE)
    lanes = {"own": centre + lane / 2, "oncoming": centre - lane / 2}
    if kind.parking:
        parked = lane + PARKING_WIDTH / 2
        lanes |= {"parked_right": centre + parked, "parked_left": centre - parked}
    solids, shadows = _cars(kind, lanes, rng)
    inset = half_width + FURNITURE_INSET
    solids += _street_furniture(kind, (centre - inset, centre + inset), rng)
    solids += _buildings(-1, half_width + sidewalk - centre, kind, rng)
    solids += _buildings(1, half_width + sidewalk + centre, kind, rng)
    sun, sky = _sun_and_sky(rng)
    return Scene(
        road_centre=centre,
        lane_width=lane,
        road_half_width=half_width,
        sidewalk_width=sidewalk,
        verge=kind.verge,
        solids=solids,
        shadows=shadows,
        sun=sun,
        sky=sky,
        exposure=rng.uniform(*EXPOSURE_RANGE),
        texture_seed=int(rng.integers(2**31)),
    )


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


# --- Writing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleDataset:
    """Where :func:`write_sample_dataset` put the data."""

    data_root: Path
    """KITTI raw root (--data-root): ``<date>/<drive>/image_02/data/<frame>.png``."""
    gt_root: Path
    """Sparse annotated depth (--gt-root), as downloaded: ``train/`` and ``val/`` folders."""
    dense_gt_root: Path
    """Dense depth of every frame with GT, merged layout: for training a small teacher."""
    train_split: Path
    test_split: Path


@dataclass(frozen=True)
class FramePlan:
    """One frame to generate: its split record and its seed."""

    split: str
    """"train" or "test"."""
    index: int
    """Position in its split file (0-based)."""
    date: str
    drive: int
    frame: int
    has_gt: bool

    @property
    def drive_name(self) -> str:
        return f"{self.date}_drive_{self.drive:04d}_sync"

    @property
    def rgb_rel(self) -> str:
        return f"{self.date}/{self.drive_name}/image_02/data/{self.frame:010d}.png"

    @property
    def gt_rel(self) -> str:
        return f"{self.drive_name}/proj_depth/groundtruth/image_02/{self.frame:010d}.png"

    @property
    def split_line(self) -> str:
        return f"{self.rgb_rel} {self.gt_rel if self.has_gt else 'None'} {FOCALS[self.date]}"


def plan_frames(split: str, count: int) -> list[FramePlan]:
    """The frames of one split: the dates cycle fastest, then the drives."""
    plans = []
    for index in range(count):
        drive = FIRST_DRIVE[split] + (index // len(DATES)) % DRIVES_PER_DATE
        has_gt = split == "train" or index % NO_GT_PERIOD != NO_GT_OFFSET
        frame = FIRST_FRAME + FRAME_STEP * index
        plans.append(FramePlan(split, index, DATES[index % len(DATES)], drive, frame, has_gt))
    return plans


def write_split(path: Path, plans: list[FramePlan], *, final_newline: bool) -> None:
    """Write a split file (the published Eigen test file has no newline after its last line)."""
    text = "\n".join(plan.split_line for plan in plans) + ("\n" if final_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_frame(dataset: SampleDataset, plan: FramePlan, *, seed: int) -> None:
    """Render one frame; write its RGB and, if it has GT, its sparse and dense depth."""
    rng = np.random.default_rng([seed, SPLIT_STREAM[plan.split], plan.index])
    height, width = IMAGE_SIZES[plan.date]
    camera = sample_camera(rng, height=height, width=width, focal=FOCALS[plan.date])
    rgb, dense, sparse = render_frame(sample_scene(rng), camera, rng)
    rgb_file = dataset.data_root / plan.rgb_rel
    rgb_file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(rgb_file, compress_level=RGB_PNG_COMPRESSION)
    if plan.has_gt:
        write_depth_png(dataset.gt_root / GT_FOLDER[plan.split] / plan.gt_rel, sparse)
        write_depth_png(dataset.dense_gt_root / plan.gt_rel, dense)


def write_sample_dataset(
    out: Path, *, n_train: int = 32, n_test: int = 8, seed: int = 0
) -> SampleDataset:
    """Write a procedural KITTI-format dataset of n_train + n_test frames under ``out``.

    Files already there are overwritten; the same arguments give byte-identical files.
    """
    if n_train < 1:
        raise ConfigError(f"--train {n_train}: the sample dataset needs at least 1 training frame")
    if n_test < MIN_TEST:
        raise ConfigError(
            f"--test {n_test}: the sample dataset needs at least {MIN_TEST} test frames "
            "(one of them has no GT, as in the Eigen test split)"
        )
    if seed < 0:
        raise ConfigError(f"--seed {seed}: pass a seed of 0 or more")
    out = Path(out)
    dataset = SampleDataset(
        data_root=out / "raw",
        gt_root=out / "gt",
        dense_gt_root=out / "dense",
        train_split=out / "splits" / "train.txt",
        test_split=out / "splits" / "test.txt",
    )
    train, test = plan_frames("train", n_train), plan_frames("test", n_test)
    for plan in train + test:
        write_frame(dataset, plan, seed=seed)
    write_split(dataset.train_split, train, final_newline=True)
    write_split(dataset.test_split, test, final_newline=False)
    return dataset
