"""Explainability pictures: coloured depth, DPM entropy, and labelled panels of them.

Used by ``evaluate --save-images`` and ``demo``. Colours come from :data:`MAGMA_ANCHORS`, nine
anchors of matplotlib's perceptually uniform "magma" map (sampled at 0, 1/8, ..., 1), interpolated
linearly in RGB: black -> purple -> red -> orange -> pale yellow, with luminance rising
monotonically, so the pictures read the same in greyscale. matplotlib is not needed.

Conventions, the same in every tile so that teacher and student pictures compare directly:

* depth: inverse depth on a fixed scale (as monodepth2 and most depth papers show it, which
  spreads the near range where the detail is): ``max_depth`` is the dark end, ``near_depth``
  (default ``max_depth / INVERSE_DEPTH_SPAN``) and anything nearer the bright end. Near = bright.
* entropy of a DPM in nats on [0, ln(n_bins)]: dark = confident (one bin), bright = uncertain
  (uniform over all bins).
* invalid pixels (no ground truth, NaN, non-positive depth) are drawn :data:`INVALID_COLOUR`,
  a neutral grey that the magma ramp never takes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from tiekd.pipeline.errors import OutputError
from tiekd.pipeline.files import os_reason

# matplotlib's "magma" (van der Walt and Smith, https://bids.github.io/colormap/) at 9 even steps.
MAGMA_ANCHORS = np.array(
    [
        (0x00, 0x00, 0x04),
        (0x1D, 0x11, 0x47),
        (0x51, 0x12, 0x7C),
        (0x83, 0x26, 0x81),
        (0xB7, 0x37, 0x79),
        (0xE7, 0x52, 0x63),
        (0xFC, 0x89, 0x61),
        (0xFE, 0xC4, 0x88),
        (0xFC, 0xFD, 0xBF),
    ],
    dtype=np.float64,
)

# Colour of pixels without a value: mid grey, distinct from every magma colour.
INVALID_COLOUR = (128, 128, 128)

# Inverse-depth pictures span depths from max_depth down to max_depth / INVERSE_DEPTH_SPAN
# (KITTI: 80 m to 5 m; NYU: 10 m to 0.625 m); nearer pixels saturate at the bright end.
INVERSE_DEPTH_SPAN = 16.0

# Relative-error pictures saturate at this |depth - gt| / gt (25 %: about d1's 1.25 ratio).
MAX_RELATIVE_ERROR = 0.25

# Panel layout: label font size (points = pixels), margin around each label and gap between
# columns in pixels, and the colours.
LABEL_FONT_SIZE = 16
LABEL_PADDING = 3
COLUMN_GAP = 4
BACKGROUND_COLOUR = (255, 255, 255)
LABEL_COLOUR = (0, 0, 0)


def colourise(values: np.ndarray, *, vmin: float, vmax: float, invalid: np.ndarray | None = None) -> np.ndarray:
    """Colour a (H, W) array with the magma ramp: vmin -> first anchor, vmax -> last anchor,
    values outside [vmin, vmax] clipped. Pixels in the boolean (H, W) mask ``invalid`` and
    non-finite values are drawn INVALID_COLOUR. Returns uint8 (H, W, 3)."""
    if not vmax > vmin:
        raise ValueError(f"colourise needs vmax > vmin, got vmin={vmin}, vmax={vmax}")
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if invalid is not None:
        bad |= np.asarray(invalid, dtype=bool)
    position = np.clip((np.where(bad, vmin, values) - vmin) / (vmax - vmin), 0.0, 1.0)
    anchors_at = np.linspace(0.0, 1.0, len(MAGMA_ANCHORS))
    channels = [np.interp(position, anchors_at, MAGMA_ANCHORS[:, c]) for c in range(3)]
    rgb = np.rint(np.stack(channels, axis=-1)).astype(np.uint8)
    rgb[bad] = INVALID_COLOUR
    return rgb


def depth_image(depth: np.ndarray, *, max_depth: float, near_depth: float | None = None) -> Image.Image:
    """Picture of a (H, W) depth map in metres as inverse depth: near = bright, far = dark.

    The scale is fixed (1/max_depth -> dark end, 1/near_depth -> bright end; near_depth defaults
    to max_depth / INVERSE_DEPTH_SPAN), not stretched per image. Pixels with depth <= 0 or not
    finite (no ground truth) are INVALID_COLOUR.
    """
    near_depth = max_depth / INVERSE_DEPTH_SPAN if near_depth is None else near_depth
    depth = np.asarray(depth, dtype=np.float64)
    invalid = ~(np.isfinite(depth) & (depth > 0))
    inverse = 1.0 / np.where(invalid, max_depth, depth)
    rgb = colourise(inverse, vmin=1.0 / max_depth, vmax=1.0 / near_depth, invalid=invalid)
    return Image.fromarray(rgb)


def entropy_image(entropy: np.ndarray, *, n_bins: int) -> Image.Image:
    """Picture of a (H, W) DPM entropy in nats on [0, ln(n_bins)]: dark = one bin, bright = all
    bins equally likely. NaN pixels are INVALID_COLOUR."""
    return Image.fromarray(colourise(entropy, vmin=0.0, vmax=math.log(n_bins)))


def relative_error_image(depth: np.ndarray, gt: np.ndarray, *, max_error: float = MAX_RELATIVE_ERROR) -> Image.Image:
    """Picture of |depth - gt| / gt for (H, W) maps in metres on [0, max_error]: dark = exact,
    bright = off by max_error or more. Pixels without GT (gt <= 0 or not finite) are INVALID_COLOUR."""
    depth, gt = np.asarray(depth, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    invalid = ~(np.isfinite(gt) & (gt > 0))
    error = np.abs(depth - gt) / np.where(invalid, 1.0, gt)
    return Image.fromarray(colourise(error, vmin=0.0, vmax=max_error, invalid=invalid))


def rgb_image(image: np.ndarray) -> Image.Image:
    """Picture of an input image given as uint8 (H, W, 3) or float (H, W, 3) in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(image)


def label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, at LABEL_FONT_SIZE where FreeType is available (else its bitmap font)."""
    if features.check("freetype2"):
        return ImageFont.load_default(size=LABEL_FONT_SIZE)
    return ImageFont.load_default()


def label_band_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    """Height in pixels of the band above each tile that holds its label."""
    return int(font.getbbox("Ag")[3]) + 2 * LABEL_PADDING


def panel(tiles: list[tuple[str, Image.Image]], *, columns: int = 1) -> Image.Image:
    """Tiles laid out row by row in ``columns`` columns, each under its title.

    Every cell is as wide as the widest tile, columns are COLUMN_GAP pixels apart; each row is as
    high as its highest tile plus the label band. With one column the picture is as wide as the
    widest tile and as high as the sum of the tile heights plus one label band per tile.
    """
    if not tiles or columns < 1:
        raise ValueError("panel needs at least one tile and one column")
    font = label_font()
    band = label_band_height(font)
    cell_width = max(image.width for _, image in tiles)
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    row_heights = [band + max(image.height for _, image in row) for row in rows]
    width = min(columns, len(tiles)) * (cell_width + COLUMN_GAP) - COLUMN_GAP
    canvas = Image.new("RGB", (width, sum(row_heights)), BACKGROUND_COLOUR)
    draw = ImageDraw.Draw(canvas)
    top = 0
    for row, row_height in zip(rows, row_heights):
        for column, (title, image) in enumerate(row):
            left = column * (cell_width + COLUMN_GAP)
            draw.text((left + LABEL_PADDING, top + LABEL_PADDING), title, fill=LABEL_COLOUR, font=font)
            canvas.paste(image.convert("RGB"), (left, top + band))
        top += row_height
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a picture as PNG, creating the parent folders; returns the path. A failed write (disk
    full, read-only folder) is one OutputError line."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    except OSError as e:
        raise OutputError(f"cannot write {path} ({os_reason(e)}); free space or choose another folder") from e
    return path
