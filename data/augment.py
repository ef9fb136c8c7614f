"""Training augmentation for KITTI / NYU samples (method.md section 6), in NumPy and numba.

One call of :func:`augment` transforms an image and any number of aligned depth maps (teacher
depth, LiDAR ground truth) with the SAME geometry, in the order of BTS / AdaBins / TIE-KD:

1. random rotation by U(-rotate_degrees, rotate_degrees) degrees (probability ``p_rotate``):
   the image bilinear, depth maps nearest so no depth is invented between a near and a far
   surface; pixels rotated in from outside become 0 (= invalid) in the maps, black in the image;
2. horizontal flip (probability ``p_flip``);
3. crop to ``crop`` with vertical offset 0 and a random horizontal offset;
4. colour augmentation of the image only (probability ``p_colour``): gamma U(colour_range),
   brightness U(brightness_range) (a dataset setting: KITTI 0.9-1.1, NYU 0.75-1.25) and three
   per-channel colour factors U(colour_range), then one clip, in one of two forms
   (``colour_aug``, :data:`COLOUR_AUGS`):

   - ``bts``: on the image in [0, 1], clipped to [0, 1] (BTS ``bts_dataloader.py``
     ``augment_image``); factor i multiplies R, G, B;
   - ``released``: on the 0..255 image, clipped to [0, 255] (the authors' ``ColorAug``,
     ``depth/datasets/pipelines/transforms_kd2.py`` l.419-459 of HPC-Lab-KOREATECH/TIE-KD, whose
     image is still uint8 there). ``x ** gamma`` on 0..255 is not a gamma curve: with gamma 1.1 grey
     level 100 becomes 158.5 and every level from 155 up saturates, with gamma 0.9 255 becomes 146.5.
     The released image is BGR, so factor 0 multiplies BLUE. The result is not rounded.

Vertical offset 0 means the crop always starts at row 0 of its input. On KITTI the input is the
352-row KB crop and the training crop is 352 rows high, so the crop covers every row and row r of
the crop is row r of the KB crop: the rows 110..351 on which the TIE-KD loss is taken stay the
rows below the sky. (``random_top=True`` draws the vertical offset as BTS does on NYU.)

All random numbers are drawn up front, in one fixed order, whatever the probabilities, ranges,
colour form and maps: rotate, angle, flip, top, left, colour, gamma, brightness, three colour
factors (:func:`draw_augmentation`). Adding ground truth to a sample, switching one augmentation
off or switching the colour form does not change the draws of the others. No ImageNet normalisation happens here; the student
normalises inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from tiekd.data.rotate import rotated_crop
from tiekd.pipeline.errors import ConfigError, DataError

# Name of the teacher map in the ``maps`` dict; the only map ``rotate_teacher=False`` leaves alone.
TEACHER_KEY = "teacher"

# uint8 images hold 0..255; augmentation works on [0, 1].
UINT8_MAX = 255.0

# Per-channel colour factors: one per channel (R, G, B in the bts form; B, G, R in the released form).
N_CHANNELS = 3

COLOUR_AUGS = ("bts", "released")
"""Forms of the colour augmentation: gamma on [0, 1] (BTS) or on 0..255 (the authors' released code)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (defaults: KITTI, method.md section 6)."""

    crop: tuple[int, int] = (352, 704)
    """Training crop (height, width) in pixels."""
    rotate_degrees: float = 2.5
    """Largest rotation angle in degrees; the angle is drawn from U(-rotate_degrees, rotate_degrees)."""
    p_rotate: float = 0.5
    """Probability of rotating a sample."""
    p_flip: float = 0.5
    """Probability of flipping a sample horizontally."""
    p_colour: float = 0.5
    """Probability of colour augmentation (gamma, brightness, per-channel colour) of the image."""
    colour_range: tuple[float, float] = (0.9, 1.1)
    """Range (low, high) of the uniform gamma and per-channel colour factors."""
    brightness_range: tuple[float, float] = (0.9, 1.1)
    """Range (low, high) of the uniform brightness factor (the dataset's: KITTI 0.9-1.1, NYU 0.75-1.25)."""
    colour_aug: str = "bts"
    """Form of the colour augmentation, one of :data:`COLOUR_AUGS`: gamma on [0, 1] or on 0..255."""
    rotate_teacher: bool = True
    """Rotate the teacher map with the image. False does what the released code does: it rotates the
    image and the GT but never the teacher map."""
    random_top: bool = False
    """False: vertical crop offset 0 (KITTI). True: uniform random vertical offset (BTS on NYU)."""


@dataclass(frozen=True)
class AugmentDraws:
    """Every random number of one sample's augmentation."""

    rotate: bool
    """Whether to rotate (drawn with probability p_rotate)."""
    angle: float
    """Rotation angle in degrees, counter-clockwise as displayed."""
    flip: bool
    """Whether to flip horizontally."""
    top_fraction: float
    """Vertical crop offset as a fraction in [0, 1) of the free rows; used only with random_top."""
    left_fraction: float
    """Horizontal crop offset as a fraction in [0, 1) of the free columns."""
    colour: bool
    """Whether to apply the colour augmentation."""
    gamma: float
    """Exponent applied to the image ([0, 1] in the bts form, 0..255 in the released form)."""
    brightness: float
    """Factor applied to all channels."""
    channel_factors: np.ndarray
    """Factors (3,) applied to R, G, B (bts form) or B, G, R (released form)."""


def draw_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentDraws:
    """Draw all random numbers of one sample; the order never depends on the config or the maps."""
    low, high = cfg.colour_range
    brightness_low, brightness_high = cfg.brightness_range
    return AugmentDraws(
        rotate=bool(rng.random() < cfg.p_rotate),
        angle=float(rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)),
        flip=bool(rng.random() < cfg.p_flip),
        top_fraction=float(rng.random()),
        left_fraction=float(rng.random()),
        colour=bool(rng.random() < cfg.p_colour),
        gamma=float(rng.uniform(low, high)),
        brightness=float(rng.uniform(brightness_low, brightness_high)),
        channel_factors=rng.uniform(low, high, size=N_CHANNELS),
    )


def eval_image(image: np.ndarray) -> np.ndarray:
    """A uint8 HxWx3 image as float32 HxWx3 in [0, 1] (what the student takes, before normalising)."""
    return np.asarray(image, dtype=np.float32) / np.float32(UINT8_MAX)


def _check_shapes(image: np.ndarray, maps: dict[str, np.ndarray], crop: tuple[int, int]) -> None:
    """Refuse maps not aligned with the image and a crop larger than the image."""
    height, width = image.shape[:2]
    for name, depth in maps.items():
        if depth.shape != (height, width):
            raise DataError(
                f"depth map {name!r} is {depth.shape[0]}x{depth.shape[1]} but its image is "
                f"{height}x{width}; the cache or ground truth is not aligned with the images"
            )
    crop_h, crop_w = crop
    if crop_h > height or crop_w > width:
        raise ConfigError(
            f"--crop {crop_h}x{crop_w} is larger than the {height}x{width} training images; "
            "pass a crop no larger than the images"
        )


def _crop_box(shape: tuple[int, int], draws: AugmentDraws, cfg: AugmentConfig) -> tuple[int, int]:
    """Top-left corner (top, left) of the training crop."""
    height, width = shape
    crop_h, crop_w = cfg.crop
    top = int(draws.top_fraction * (height - crop_h + 1)) if cfg.random_top else 0
    left = int(draws.left_fraction * (width - crop_w + 1))
    return top, left


def _geometry(
    array: np.ndarray, draws: AugmentDraws, cfg: AugmentConfig, *, rotate: bool, bilinear: bool
) -> np.ndarray:
    """Rotation (the image bilinear, maps nearest), flip and crop of one image or map, with the
    sample's draws; a rotation computes only the pixels the crop keeps (data/rotate.py)."""
    corner = _crop_box(array.shape[:2], draws, cfg)
    if rotate and draws.rotate:
        return rotated_crop(array, draws.angle, corner, cfg.crop, flip=draws.flip, bilinear=bilinear)
    if draws.flip:
        array = array[:, ::-1]
    (top, left), (crop_h, crop_w) = corner, cfg.crop
    return np.ascontiguousarray(array[top : top + crop_h, left : left + crop_w])


def _colour_bts(image: np.ndarray, draws: AugmentDraws) -> np.ndarray:
    """Gamma, brightness and per-channel colour of a uint8 HxWx3 RGB image taken to [0, 1], as BTS's
    ``augment_image``, in float32; float32 HxWx3 clipped to [0, 1]."""
    image = eval_image(image) ** draws.gamma * draws.brightness
    image = image * draws.channel_factors.astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _colour_released(image: np.ndarray, draws: AugmentDraws) -> np.ndarray:
    """Gamma, brightness and per-channel colour of a uint8 HxWx3 RGB image on 0..255, as the
    released ``ColorAug`` (float64, one clip to [0, 255] at the end, no rounding); float32 HxWx3
    in [0, 1]. The released image is BGR, so the factors apply to the channels in reverse."""
    image = image.astype(np.float64) ** draws.gamma * draws.brightness
    image = image * draws.channel_factors[::-1]
    return (np.clip(image, 0.0, UINT8_MAX) / UINT8_MAX).astype(np.float32)


LEVELS = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, N_CHANNELS))
"""Every uint8 level in every channel: (256, 3)."""


@numba.njit(nogil=True, cache=True)
def _look_up(image, table, out):
    """``out[c, y, x] = table[image[y, x, c], c]``: uint8 (H, W, 3) through a float32 (256, 3) table
    into channel-first float32 (3, H, W), the layout the student takes."""
    height, width, channels = image.shape
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                out[c, y, x] = table[image[y, x, c], c]


def _colour(image: np.ndarray, draws: AugmentDraws, form: str) -> np.ndarray:
    """The colour augmentation of a uint8 HxWx3 RGB image in ``form`` (:data:`COLOUR_AUGS`), or
    none when the draws say so; float32 HxWx3 in [0, 1], a view of channel-first memory, so the
    move to the student's (3, H, W) layout copies nothing.

    A uint8 image has 256 levels a channel, so the transform runs on those 256 x 3 values and the
    image looks its result up: the same elementwise operations on the same inputs give the same
    bits as on the whole image (tests/data/test_augment.py), at a fraction of the time (the power
    function dominated the data path: bench/bench_data.py)."""
    if draws.colour and form not in COLOUR_AUGS:
        raise ConfigError(f"--colour-aug {form!r} is not one of {', '.join(COLOUR_AUGS)}")
    if not draws.colour:
        table = eval_image(LEVELS)
    else:
        table = (_colour_released if form == "released" else _colour_bts)(LEVELS, draws)
    out = np.empty((image.shape[2], *image.shape[:2]), np.float32)
    _look_up(np.ascontiguousarray(image), np.ascontiguousarray(table), out)
    return out.transpose(1, 2, 0)


def apply_augmentation(
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    draws: AugmentDraws,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Augment one training sample with given draws; see :func:`augment` for shapes."""
    image = np.asarray(image, dtype=np.uint8)
    maps = {name: np.asarray(depth, dtype=np.float32) for name, depth in maps.items()}
    _check_shapes(image, maps, cfg.crop)
    out_image = _geometry(image, draws, cfg, rotate=True, bilinear=True)
    out_maps = {
        name: _geometry(depth, draws, cfg, rotate=cfg.rotate_teacher or name != TEACHER_KEY, bilinear=False)
        for name, depth in maps.items()
    }
    return _colour(out_image, draws, cfg.colour_aug), out_maps


def augment(
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Augment one training sample.

    image: uint8 (H, W, 3), already KB-cropped (352x1216 on KITTI).
    maps: name -> float32 (H, W) depth in metres aligned with the image, 0 = invalid (any subset
        of e.g. "teacher", "gt"; may be empty).
    rng: the generator all draws come from (see :func:`draw_augmentation`).
    Returns the image as float32 (crop_h, crop_w, 3) in [0, 1] and the maps as float32
    (crop_h, crop_w), with the same geometry applied to all of them. Raises ConfigError when
    ``cfg.crop`` is larger than the image, DataError when a map is not the image's size.
    """
    return apply_augmentation(image, maps, draw_augmentation(rng, cfg), cfg)
