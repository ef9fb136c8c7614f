"""How an image of any size becomes a frame of the store's size, and the content hash of an image.

The stored map's size is the dataset's cache crop (a description file's ``image_size`` or
``crop``; KITTI 352x1216, NYU 480x640). An image is fitted to it in one of two ways:

- ``whole`` (the default): the whole image is resized to the map's size (bilinear, PIL's
  antialiased filter), so the field of view is kept. Its aspect ratio must be the map's within
  ``ASPECT_TOLERANCE``; otherwise it is refused (describe the camera in a description file, or ask
  for ``crop``) rather than stretched.
- ``crop``: the largest region of the map's aspect ratio, placed as the dataset places its cache
  crop (KITTI: bottom rows, centred across), is resized to the map's size.

The teacher runs on the fitted frame (or at ``--teacher-input``, resized in and out), and training
cuts the dataset's random training crop from it (KITTI 352x704), as from a labelled frame.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from tiekd.pipeline.errors import DataError

FITS = ("whole", "crop")
ASPECT_TOLERANCE = 0.02
"""Relative difference of aspect ratios still resized whole (a 1080x1920 frame fits 540x968)."""


def content_sha256(image: np.ndarray) -> str:
    """SHA-256 of an image's decoded pixels: its size, then its uint8 (H, W, 3) values. The same
    picture re-encoded losslessly (another PNG compression, a BMP) has the same hash."""
    digest = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def aspect_box(height: int, width: int, size: tuple[int, int], place) -> tuple[int, int, int, int]:
    """(top, left, h, w): the largest region of ``size``'s aspect ratio in a height x width image,
    placed by ``place(height, width, crop=(h, w)) -> (top, left)`` (the dataset's cache box)."""
    ratio = size[0] / size[1]
    h, w = (height, round(height / ratio)) if height / width < ratio else (round(width * ratio), width)
    h, w = min(h, height), min(w, width)
    top, left = place(height, width, crop=(h, w))
    return top, left, h, w


def check_fit(image_size: tuple[int, int], size: tuple[int, int], *, fit: str, what: str) -> None:
    """Refuse, with ``fit`` whole, an image whose shape is not the maps' (``what`` names it)."""
    height, width = image_size
    if fit == "whole" and abs((height / width) / (size[0] / size[1]) - 1) > ASPECT_TOLERANCE:
        raise DataError(
            f"{what} is {height}x{width}, another shape than the {size[0]}x{size[1]} maps of the dataset; describe "
            "your camera in a dataset file (--dataset PATH.yaml with image_size), or pass --fit crop"
        )


def fit_image(image: np.ndarray, size: tuple[int, int], *, fit: str, place, what: str) -> np.ndarray:
    """``image`` uint8 (H, W, 3) as a frame of ``size`` (see the module docstring); ``what`` names it."""
    check_fit(image.shape[:2], size, fit=fit, what=what)
    if fit == "crop":
        top, left, h, w = aspect_box(*image.shape[:2], size, place)
        image = image[top : top + h, left : left + w]
    if image.shape[:2] == tuple(size):
        return np.ascontiguousarray(image)
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    )
