"""Rotation, flip and crop of one training sample in one pass over the crop only.

The augmentation rotates the whole image about its centre, flips it and then keeps a crop
(data/augment.py). Rotating only the pixels the crop keeps does the same work on 704 of the KB
crop's 1216 columns, and PIL's generic transform, which calls a filter function through a
pointer per pixel, was half of the packed data path (bench/bench_data.py). The kernels here
compute, for each pixel of the crop, exactly what ``Image.rotate(angle, resample, fillcolor=0)``
computes for that pixel of the whole image (Pillow's ``libImaging/Geometry.c``):

- the image, bilinear: the source point of output pixel (X, Y) is ``a0 (X + 0.5) + a1 (Y + 0.5)
  + a2`` (and the same for y), in float64, in that order; a point outside the image is black;
  otherwise the four neighbours (edges clamped) are blended in float64 and the value truncated
  to uint8, as Pillow's ``bilinear_filter32RGB``;
- the maps, nearest: Pillow's ``affine_fixed``, in 16.16 fixed point: the source column of
  (X, Y) is ``(A2 + X A0 + Y A1) >> 16`` with the coefficients rounded once as Pillow rounds them,
  so a window gives the same integers as Pillow's incremental sums over the whole row.

tests/data/test_rotate.py checks the result against Pillow's own rotate, flip and crop, bit for bit.
"""

from __future__ import annotations

import math

import numba
import numpy as np

FIXED_ONE = 65536.0
"""1.0 in Pillow's 16.16 fixed point."""
FIXED_LIMIT = 32768.0
"""Pillow uses fixed point only while every source coordinate stays below this."""


def pil_rotation_matrix(angle: float, size: tuple[int, int]) -> tuple[float, ...]:
    """The inverse affine matrix (a0..a5) ``Image.rotate(angle)`` of an image of ``size`` (height,
    width) uses: output pixel -> source point, rotation about the centre, computed as Pillow does."""
    height, width = size
    radians = -math.radians(angle % 360.0)
    a0, a1 = round(math.cos(radians), 15), round(math.sin(radians), 15)
    a3, a4 = round(-math.sin(radians), 15), round(math.cos(radians), 15)
    centre_x, centre_y = width / 2, height / 2
    a2 = a0 * -centre_x + a1 * -centre_y + 0.0 + centre_x
    a5 = a3 * -centre_x + a4 * -centre_y + 0.0 + centre_y
    return a0, a1, a2, a3, a4, a5


def _fixed(value: float) -> int:
    """Pillow's ``FIX``: 16.16 fixed point, rounded half up."""
    return math.floor(value * FIXED_ONE + 0.5)


def pil_fixed_matrix(matrix: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    """The 16.16 fixed-point coefficients Pillow's nearest-neighbour rotation uses, as int64."""
    a0, a1, a2, a3, a4, a5 = matrix
    height, width = size
    for x, y in ((0, 0), (width, height), (0, height), (width, 0)):
        if abs(x * a0 + y * a1 + a2) >= FIXED_LIMIT or abs(x * a3 + y * a4 + a5) >= FIXED_LIMIT:
            raise ValueError(f"a {height}x{width} image is too large for Pillow's fixed-point rotation")
    fixed = (_fixed(a0), _fixed(a1), _fixed(a2 + a0 * 0.5 + a1 * 0.5),
             _fixed(a3), _fixed(a4), _fixed(a5 + a3 * 0.5 + a4 * 0.5))  # fmt: skip
    return np.array(fixed, np.int64)


@numba.njit(nogil=True, cache=True)
def _source_column(j, left, width, flip):
    """Column of the rotated (unflipped) whole image that column ``j`` of the crop shows."""
    return width - 1 - (left + j) if flip else left + j


@numba.njit(nogil=True, cache=True)
def _lerp(image, y, x0, x1, c, dx):
    """Pillow's ``BILINEAR(v, in[x0], in[x1], dx)`` on channel ``c`` of row ``y``, in float64
    (``in[x1] - in[x0]`` is exact as a float, so this is Pillow's int-then-double arithmetic)."""
    left = float(image[y, x0, c])
    return left + (float(image[y, x1, c]) - left) * dx


@numba.njit(nogil=True, cache=True)
def _bilinear_window(image, matrix, top, left, flip, out):
    """``out`` (h, w, c) uint8: the crop at (top, left) of the rotated, optionally flipped image."""
    height, width, channels = image.shape
    a0, a1, a2, a3, a4, a5 = matrix
    for i in range(out.shape[0]):
        y_out = top + i + 0.5
        for j in range(out.shape[1]):
            x_out = _source_column(j, left, width, flip) + 0.5
            x_in = a0 * x_out + a1 * y_out + a2
            y_in = a3 * x_out + a4 * y_out + a5
            if x_in < 0.0 or x_in >= width or y_in < 0.0 or y_in >= height:
                for c in range(channels):
                    out[i, j, c] = 0
                continue
            x_in -= 0.5
            y_in -= 0.5
            x, y = int(math.floor(x_in)), int(math.floor(y_in))
            dx, dy = x_in - x, y_in - y
            x0, x1 = min(max(x, 0), width - 1), min(max(x + 1, 0), width - 1)
            y0 = min(max(y, 0), height - 1)
            below = 0 <= y + 1 < height
            for c in range(channels):
                v1 = _lerp(image, y0, x0, x1, c, dx)
                if below:
                    v1 = v1 + (_lerp(image, y + 1, x0, x1, c, dx) - v1) * dy
                out[i, j, c] = np.uint8(v1)


@numba.njit(nogil=True, cache=True)
def _nearest_window(depth, fixed, top, left, flip, out):
    """``out`` (h, w): the crop at (top, left) of the nearest-rotated, optionally flipped map."""
    height, width = depth.shape
    a0, a1, a2, a3, a4, a5 = fixed
    for i in range(out.shape[0]):
        y = top + i
        for j in range(out.shape[1]):
            x = _source_column(j, left, width, flip)
            x_in = (a2 + y * a1 + x * a0) >> 16
            y_in = (a5 + y * a4 + x * a3) >> 16
            inside = 0 <= x_in < width and 0 <= y_in < height
            out[i, j] = depth[y_in, x_in] if inside else 0


def rotated_crop(
    array: np.ndarray, angle: float, corner: tuple[int, int], crop: tuple[int, int], *, flip: bool, bilinear: bool
) -> np.ndarray:
    """``rotate(angle)``, then a horizontal flip if ``flip``, then the ``crop`` (height, width) at
    ``corner`` (top, left) of a uint8 HxWx3 image (``bilinear``) or a float32 HxW map (nearest),
    as Pillow's ``Image.rotate(angle, resample, fillcolor=0)`` does it, computing only the crop."""
    matrix = pil_rotation_matrix(angle, array.shape[:2])
    out = np.empty((*crop, *array.shape[2:]), array.dtype)
    top, left = corner
    if bilinear:
        _bilinear_window(np.ascontiguousarray(array), np.array(matrix), top, left, flip, out)
    else:
        fixed = pil_fixed_matrix(matrix, array.shape[:2])
        _nearest_window(np.ascontiguousarray(array), fixed, top, left, flip, out)
    return out
