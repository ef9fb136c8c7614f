"""The crop-only rotation equals Pillow's rotate, flip and crop of the whole image, bit for bit."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from tiekd.data.rotate import rotated_crop


def pillow_reference(array, angle, corner, crop, *, flip, resample):
    """What data/augment.py did before: rotate the whole image with Pillow, flip, then crop."""
    rotated = np.asarray(Image.fromarray(array).rotate(angle, resample=resample, fillcolor=0))
    if flip:
        rotated = rotated[:, ::-1]
    top, left = corner
    return rotated[top : top + crop[0], left : left + crop[1]]


CASES = [  # (height, width), crop, angle in degrees
    ((352, 1216), (352, 704), 2.5),
    ((352, 1216), (352, 704), -1.7310093),
    ((37, 91), (20, 33), -2.4999),
    ((48, 64), (48, 64), 17.0),
    ((31, 60), (16, 16), -133.3),
    ((60, 31), (60, 31), 0.0),
]


@pytest.mark.parametrize("shape, crop, angle", CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_the_image_equals_pillows_bilinear_rotation(shape, crop, angle, flip):
    rng = np.random.default_rng(zlib.crc32(repr((shape, angle)).encode()))
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    corner = (int(rng.integers(0, shape[0] - crop[0] + 1)), int(rng.integers(0, shape[1] - crop[1] + 1)))
    ours = rotated_crop(image, angle, corner, crop, flip=flip, bilinear=True)
    reference = pillow_reference(image, angle, corner, crop, flip=flip, resample=Image.Resampling.BILINEAR)
    assert ours.dtype == np.uint8 and ours.shape == (*crop, 3)
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("shape, crop, angle", CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_a_depth_map_equals_pillows_nearest_rotation(shape, crop, angle, flip):
    rng = np.random.default_rng(zlib.crc32(repr((shape, angle, "map")).encode()))
    depth = rng.uniform(0.5, 80.0, shape).astype(np.float32)
    depth[rng.random(shape) < 0.7] = 0.0  # sparse, as LiDAR
    corner = (int(rng.integers(0, shape[0] - crop[0] + 1)), int(rng.integers(0, shape[1] - crop[1] + 1)))
    ours = rotated_crop(depth, angle, corner, crop, flip=flip, bilinear=False)
    reference = pillow_reference(depth, angle, corner, crop, flip=flip, resample=Image.Resampling.NEAREST)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)


def test_pixels_rotated_in_from_outside_are_zero():
    image = np.full((40, 40, 3), 200, np.uint8)
    ours = rotated_crop(image, 45.0, (0, 0), (40, 40), flip=False, bilinear=True)
    assert (ours[0, 0] == 0).all() and (ours[20, 20] == 200).all()
