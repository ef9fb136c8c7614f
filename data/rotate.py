"""Rotation, flip and crop of one training sample in one pass over the crop only.

The augmentation rotates the whole image about its centre, flips it and then keeps a crop
(data/augment.py). Rotating only the pixels the crop keeps does the same work on 704 of the KB
crop's 1216 columns, and PIL's generic transform, which calls a filter function through a
pointer per pixel, was half of the packed data path (bench/bench_data.py). The image kernel
works a row at a time: the source points of the row (a branch-free pass), then runs of pixels
whose source points step one column right on one pair of rows (almost all of them at the
augmentation's small angles), blended over contiguous bytes, which LLVM vectorises: 3.4 ms for a
352x704 crop against 6.7 ms pixel by pixel (and PIL's whole-image rotate before). The kernels here
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


U3 = np.uint64(3)
"""Bytes of an RGB pixel, unsigned: numba checks a signed index for wrap-around, which keeps LLVM
from vectorising the loops below."""


@numba.njit(nogil=True, cache=True)
def _lerp(image, y, x0, x1, c, dx):
    """Pillow's ``BILINEAR(v, in[x0], in[x1], dx)`` on channel ``c`` of row ``y``, in float64
    (``in[x1] - in[x0]`` is exact as a float, so this is Pillow's int-then-double arithmetic)."""
    left = float(image[y, x0, c])
    return left + (float(image[y, x1, c]) - left) * dx


@numba.njit(nogil=True, cache=True)
def _edge_pixel(image, x, y, dx, dy, out, o):
    """Bytes ``o..o+2`` of ``out``: one pixel with a neighbour off the image (clamped to the edge;
    no row below: no vertical blend), as Pillow."""
    height, width, channels = image.shape
    x0, x1 = min(max(x, 0), width - 1), min(max(x + 1, 0), width - 1)
    y0 = min(max(y, 0), height - 1)
    for c in range(channels):
        v1 = _lerp(image, y0, x0, x1, c, dx)
        if 0 <= y + 1 < height:
            v1 = v1 + (_lerp(image, y + 1, x0, x1, c, dx) - v1) * dy
        out[o + c] = np.uint8(v1)


@numba.njit(nogil=True, cache=True)
def _source_points(matrix, y_out, left, points):
    """Each pixel of one output row's source point, in Pillow's arithmetic: rows of ``points``
    (6, w) get x_in, y_in, floor(x_in - 0.5), floor(y_in - 0.5), dx and dy. No branch: it vectorises."""
    a0, a1, a2, a3, a4, a5 = matrix
    x_in, y_in, x_floor, y_floor, dx, dy = points[0], points[1], points[2], points[3], points[4], points[5]
    for j in range(np.uint64(points.shape[1])):
        x_out = left + j + 0.5
        x, y = a0 * x_out + a1 * y_out + a2, a3 * x_out + a4 * y_out + a5
        x_low, y_low = np.floor(x - 0.5), np.floor(y - 0.5)
        x_in[j], y_in[j], x_floor[j], y_floor[j], dx[j], dy[j] = x, y, x_low, y_low, x - 0.5 - x_low, y - 0.5 - y_low


@numba.njit(nogil=True, cache=True)
def _blend_run(above, below, start, dx, dy, out, n):
    """Bytes ``0..3n-1`` of ``out``: ``n`` pixels whose source points step one column right on one
    pair of rows, from byte ``start`` of each (the first pixel's left neighbour). The bytes are
    contiguous, so Pillow's float64 blends vectorise; the result is truncated as Pillow's."""
    above, below = above[start:], below[start:]
    for p in range(np.uint64(n)):
        for c in range(U3):
            k = U3 * p + c
            a, b = float(above[k]), float(below[k])
            v1 = a + (float(above[k + U3]) - a) * dx[p]
            v2 = b + (float(below[k + U3]) - b) * dx[p]
            out[k] = np.uint8(v1 + (v2 - v1) * dy[p])


@numba.njit(nogil=True, cache=True)
def _run_end(points, j, width):
    """Where the run of interior pixels from ``j`` ends: each next pixel's source point one column
    further right on the same pair of rows, its right neighbour inside the image."""
    x_in, x_floor, y_floor = points[0], points[2], points[3]
    k = j + 1
    while (k < x_in.shape[0] and y_floor[k] == y_floor[j] and x_floor[k] == x_floor[j] + (k - j)
           and x_floor[k] + 1 < width and x_in[k] < width):  # fmt: skip
        k += 1
    return k


@numba.njit(nogil=True, cache=True)
def _bilinear_row(image, rows, points, out):
    """One output row (w * 3 bytes) from its source points: black outside the image, Pillow's edge
    rule at the edges, and runs of interior pixels (almost all of a small rotation) blended at once."""
    height, width, _ = image.shape
    x_in, y_in, x_floor, y_floor, dx, dy = points[0], points[1], points[2], points[3], points[4], points[5]
    j = 0
    while j < x_in.shape[0]:
        x, y = int(x_floor[j]), int(y_floor[j])
        if not (0.0 <= x_in[j] < width and 0.0 <= y_in[j] < height):
            out[3 * j], out[3 * j + 1], out[3 * j + 2] = 0, 0, 0
            j += 1
        elif not (0 <= x and x + 1 < width and 0 <= y and y + 1 < height):
            _edge_pixel(image, x, y, dx[j], dy[j], out, 3 * j)
            j += 1
        else:
            k = _run_end(points, j, width)
            _blend_run(rows[y], rows[y + 1], 3 * x, dx[j:k], dy[j:k], out[3 * j :], k - j)
            j = k


@numba.njit(nogil=True, cache=True)
def _bilinear_window(image, matrix, top, left, flip, out):
    """``out`` (h, w, 3) uint8: the crop at (top, left) of the rotated, optionally flipped image.
    A flip computes the mirrored window of the unflipped image and reverses each row's pixels."""
    height, width, _ = image.shape
    w = out.shape[1]
    rows = image.reshape(height, width * 3)
    points, line = np.empty((6, w)), np.empty(3 * w, np.uint8)
    for i in range(out.shape[0]):
        _source_points(matrix, top + i + 0.5, width - left - w if flip else left, points)
        _bilinear_row(image, rows, points, line if flip else out[i].reshape(3 * w))
        for j in range(w if flip else 0):
            for c in range(3):
                out[i, w - 1 - j, c] = line[3 * j + c]


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
