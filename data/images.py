"""Image and depth-PNG readers shared by the datasets.

Unreadable files become one DataError that names the file and what to do; a depth PNG's scale
(value per metre) is the dataset's, passed by its module (KITTI 256, NYU's millimetres 1000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from tiekd.pipeline.errors import DataError


def _open_image(path: Path, *, what: str) -> Image.Image:
    """The image at ``path``, loaded; DataError for a missing, directory or unreadable file."""
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; check --data-root / --gt-root") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, not a file; check the split file's paths") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what} {path} is not a readable image ({type(e).__name__}); re-extract it") from e


def read_rgb(path: Path) -> np.ndarray:
    """An RGB image as uint8 HxWx3. Images of more than 8 bits a channel (e.g. 16-bit grayscale)
    are refused: PIL's conversion to RGB would saturate them instead of scaling."""
    image = _open_image(path, what="image")
    if ImageMode.getmode(image.mode).typestr not in ("|u1", "|b1"):
        raise DataError(
            f"image {path} is not an 8-bit image (PIL mode {image.mode}); convert it to 8-bit RGB "
            "(KITTI's colour images are 8-bit RGB PNGs)"
        )
    return np.asarray(image.convert("RGB"))


def read_depth_png(path: Path, *, scale: float) -> np.ndarray:
    """A 16-bit depth PNG as float32 HxW metres = value / scale (0 where there is no measurement);
    KITTI's scale is 256 (NYU's millimetres: 1000)."""
    image = _open_image(path, what="depth map")
    if image.mode not in ("I;16", "I;16B", "I"):
        raise DataError(f"depth map {path} has mode {image.mode}; KITTI and NYU depth PNGs are 16-bit")
    return np.asarray(image, dtype=np.float32) / np.float32(scale)


def write_depth_png(path: Path, depth: np.ndarray, *, scale: float) -> None:
    """Write float metres as a 16-bit depth PNG (uint16, value = round(depth * scale), 0 = none)."""
    value = np.clip(np.round(depth * scale), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(value).save(path)
