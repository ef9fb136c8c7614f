"""Tests of pipeline/pictures/tiles.py: the magma ramp, depth and entropy pictures, panels, PNG files."""

import math

import numpy as np
import pytest
from PIL import Image

from tiekd.pipeline.pictures.tiles import (
    BACKGROUND_COLOUR,
    COLUMN_GAP,
    INVALID_COLOUR,
    INVERSE_DEPTH_SPAN,
    MAGMA_ANCHORS,
    colourise,
    depth_image,
    entropy_image,
    label_band_height,
    label_font,
    panel,
    relative_error_image,
    rgb_image,
    save_png,
)

FIRST, LAST = tuple(MAGMA_ANCHORS[0].astype(int)), tuple(MAGMA_ANCHORS[-1].astype(int))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance (Rec. 709 primaries, sRGB transfer) of 0..255 RGB, float64 in [0, 1]."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def test_colourise_endpoints_are_the_first_and_last_anchor():
    rgb = colourise(np.array([[2.0, 7.0, -5.0, 99.0]]), vmin=2.0, vmax=7.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert [tuple(p) for p in rgb[0]] == [FIRST, LAST, FIRST, LAST]


def test_colourise_hits_every_anchor_and_interpolates_linearly_between():
    n = len(MAGMA_ANCHORS)
    at_anchors = colourise(np.arange(n, dtype=np.float64)[None], vmin=0.0, vmax=n - 1.0)
    np.testing.assert_array_equal(at_anchors[0], MAGMA_ANCHORS)
    halfway = colourise(np.arange(n - 1)[None] + 0.5, vmin=0.0, vmax=n - 1.0)
    np.testing.assert_allclose(halfway[0], (MAGMA_ANCHORS[:-1] + MAGMA_ANCHORS[1:]) / 2, atol=0.5)


def test_colourise_luminance_rises_monotonically():
    position = np.linspace(0.0, 1.0, 2001)
    ramp = colourise(position[None], vmin=0.0, vmax=1.0)[0]
    # The same ramp in float64 before rounding: each channel piecewise linear between anchors.
    anchors_at = np.arange(len(MAGMA_ANCHORS)) / (len(MAGMA_ANCHORS) - 1)
    exact = np.stack([np.interp(position, anchors_at, MAGMA_ANCHORS[:, c]) for c in range(3)], -1)
    assert np.abs(ramp - exact).max() <= 0.5
    assert np.all(np.diff(luminance(exact)) > 0)
    assert luminance(exact[-1]) - luminance(exact[0]) > 0.9


def test_colourise_invalid_pixels_are_grey():
    values = np.array([[1.0, np.nan, 3.0], [np.inf, 2.0, 0.5]])
    mask = np.array([[False, False, True], [False, False, False]])
    rgb = colourise(values, vmin=0.0, vmax=4.0, invalid=mask)
    grey = np.all(rgb == INVALID_COLOUR, axis=-1)
    np.testing.assert_array_equal(grey, [[False, True, True], [True, False, False]])
    ramp = colourise(np.linspace(0.0, 1.0, 1001)[None], vmin=0.0, vmax=1.0)[0]
    assert not np.any(np.all(ramp == INVALID_COLOUR, axis=-1))  # grey is never a depth colour


def test_colourise_refuses_an_empty_range():
    with pytest.raises(ValueError, match="vmax > vmin"):
        colourise(np.zeros((2, 2)), vmin=1.0, vmax=1.0)


def test_depth_image_near_is_bright_far_is_dark_invalid_is_grey():
    max_depth = 80.0
    near = max_depth / INVERSE_DEPTH_SPAN
    depth = np.array([[max_depth, 200.0, near, 1.0, 0.0, np.nan, 20.0, 10.0]], np.float32)
    picture = depth_image(depth, max_depth=max_depth)
    assert picture.mode == "RGB" and picture.size == (8, 1)
    rgb = np.asarray(picture)[0]
    assert [tuple(p) for p in rgb[:6]] == [FIRST, FIRST, LAST, LAST, INVALID_COLOUR, INVALID_COLOUR]
    assert luminance(rgb[0]) < luminance(rgb[6]) < luminance(rgb[7]) < luminance(rgb[2])


def test_depth_image_uses_inverse_depth_on_a_fixed_scale():
    # Inverse depth halfway between 1/80 and 1/5 is 1/(2 / (1/80 + 1/5)) = 9.41 m.
    halfway = 2.0 / (1.0 / 80.0 + 1.0 / 5.0)
    rgb = np.asarray(depth_image(np.array([[halfway]]), max_depth=80.0, near_depth=5.0))[0, 0]
    np.testing.assert_array_equal(rgb, colourise(np.array([[0.5]]), vmin=0.0, vmax=1.0)[0, 0])


def test_entropy_image_spans_zero_to_log_bins():
    n_bins = 257
    uniform = np.full(n_bins, 1.0 / n_bins)
    entropy = np.array([[0.0, -np.sum(uniform * np.log(uniform)), np.nan]])
    rgb = np.asarray(entropy_image(entropy, n_bins=n_bins))[0]
    assert [tuple(p) for p in rgb] == [FIRST, LAST, INVALID_COLOUR]
    middle = np.asarray(entropy_image(np.array([[math.log(n_bins) / 2]]), n_bins=n_bins))[0, 0]
    np.testing.assert_array_equal(middle, MAGMA_ANCHORS[len(MAGMA_ANCHORS) // 2])


def test_rgb_image_accepts_uint8_and_unit_floats():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(rgb_image(image)), image)
    np.testing.assert_array_equal(np.asarray(rgb_image(image / 255.0)), image)


def solid(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def test_one_column_panel_stacks_tiles_under_label_bands():
    tiles = [
        ("input", solid(40, 10, (255, 0, 0))),
        ("teacher", solid(30, 20, (0, 255, 0))),
        ("entropy", solid(40, 15, (0, 0, 255))),
    ]
    band = label_band_height(label_font())
    picture = panel(tiles)
    assert picture.size == (40, 10 + 20 + 15 + 3 * band)
    rgb = np.asarray(picture)
    top = 0
    for title, tile in tiles:
        np.testing.assert_array_equal(rgb[top + band : top + band + tile.height, : tile.width], np.asarray(tile))
        label = rgb[top : top + band]
        assert np.any(np.any(label != BACKGROUND_COLOUR, axis=-1)), f"no text drawn for {title}"
        top += band + tile.height
    assert np.all(rgb[band + 10 + band : band + 10 + band + 20, 30:] == BACKGROUND_COLOUR)


def test_empty_title_leaves_the_band_blank():
    band = label_band_height(label_font())
    rgb = np.asarray(panel([("", solid(12, 6, (9, 9, 9)))]))
    assert rgb.shape == (band + 6, 12, 3)
    assert np.all(rgb[:band] == BACKGROUND_COLOUR)


def test_two_column_panel_layout():
    tiles = [(name, solid(50, 8 + i, (10 * i, 0, 0))) for i, name in enumerate("abc")]
    band = label_band_height(label_font())
    picture = panel(tiles, columns=2)
    assert picture.size == (2 * 50 + COLUMN_GAP, (band + 9) + (band + 10))
    rgb = np.asarray(picture)
    np.testing.assert_array_equal(rgb[band : band + 9, 50 + COLUMN_GAP :], np.asarray(tiles[1][1]))
    np.testing.assert_array_equal(rgb[2 * band + 9 :, :50], np.asarray(tiles[2][1]))


def test_panel_refuses_no_tiles():
    with pytest.raises(ValueError):
        panel([])


def test_save_png_creates_folders_and_round_trips(tmp_path):
    depth = np.linspace(1.0, 80.0, 24 * 16).reshape(16, 24)
    picture = panel([("depth", depth_image(depth, max_depth=80.0)), ("entropy", entropy_image(depth / 20, n_bins=49))])
    path = save_png(picture, tmp_path / "images" / "0001" / "panel.png")
    assert path.is_file()
    with Image.open(path) as reread:
        assert reread.format == "PNG"
        np.testing.assert_array_equal(np.asarray(reread.convert("RGB")), np.asarray(picture))


def test_relative_error_image_scale_and_missing_gt():
    gt = np.array([[10.0, 10.0, 0.0, 20.0]])
    depth = np.array([[10.0, 12.5, 5.0, 22.5]])  # errors 0, 25 % (saturates), no GT, 12.5 %
    rgb = np.asarray(relative_error_image(depth, gt))
    assert tuple(rgb[0, 0]) == tuple(MAGMA_ANCHORS[0].astype(np.uint8))
    assert tuple(rgb[0, 1]) == tuple(MAGMA_ANCHORS[-1].astype(np.uint8))
    assert tuple(rgb[0, 2]) == INVALID_COLOUR
    assert tuple(rgb[0, 3]) == tuple(MAGMA_ANCHORS[4].astype(np.uint8))  # half the scale: the middle anchor
