"""The street scenes of the sample dataset: the camera, the road, the solids on it, the light.

:func:`sample_scene` draws a random street and :func:`sample_camera` a KITTI-like camera; both
only describe the scene, :mod:`tiekd.data.sample.render` turns it into images and depth maps.

The scenes carry the monocular depth cues a network learns from: a ground plane in perspective
whose texture is fixed in world coordinates (texture gradient), a road with lane markings,
facades at random lateral distances, cars, pedestrians and poles of known size standing on the
ground (size and contact cues), shading by surface normal, and haze towards the sky colour with
distance (aerial perspective).

World frame: X right, Y up, Z forward, in metres; the road is the plane Y = 0 and the camera
sits at (0, CAMERA_HEIGHT, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- Camera ---------------------------------------------------------------------------------
# Height of KITTI's cameras above the road (Geiger et al., "Vision meets robotics", IJRR 2013).
CAMERA_HEIGHT = 1.65
# KITTI's horizon lies near 45 % of the image height; with the principal point at the image
# centre the camera is therefore pitched slightly down.
HORIZON_ROW = 0.45
# Standard deviations of the random pitch and roll (radians): the car sways over bumps.
PITCH_STD = np.radians(0.4)
ROLL_STD = np.radians(0.4)

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
CAR_COLOURS = np.array([[0.85, 0.85, 0.85], [0.55, 0.56, 0.58], [0.1, 0.1, 0.11], [0.6, 0.1, 0.08], [0.1, 0.2, 0.5]])
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

# --- Sun and sky ----------------------------------------------------------------------------
SUN_ELEVATION_RANGE = (0.3, 1.1)  # radians
SKY_HORIZON = np.array([0.78, 0.82, 0.86])
SKY_ZENITH = np.array([0.35, 0.52, 0.8])
SKY_JITTER = ((0.9, 1.05), (0.85, 1.1))  # relative brightness of the horizon and the zenith
EXPOSURE_RANGE = (0.85, 1.15)


# --- Scene description ----------------------------------------------------------------------
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
        cars=(3, 9),
        parking=True,
        building_gap=0.1,
        setback=1.0,
        storeys=(2, 7),
        tree_share=0.0,
        verge=PAVEMENT,
    ),
    "residential": StreetKind(
        cars=(2, 7),
        parking=True,
        building_gap=0.45,
        setback=8.0,
        storeys=(1, 3),
        tree_share=0.6,
        verge=GRASS,
    ),
    "rural": StreetKind(
        cars=(0, 4),
        parking=False,
        building_gap=0.8,
        setback=25.0,
        storeys=(1, 3),
        tree_share=0.6,
        verge=GRASS,
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
