"""Tests of data/augment.py: one geometry for image and maps, nearest maps, colour on the image only."""

import dataclasses

import numpy as np
import pytest
from support.colour_aug_reference import color_aug_bts, color_aug_released, mmcv_normalize
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from tiekd.data.augment import (
    COLOUR_AUGS,
    TEACHER_KEY,
    AugmentConfig,
    AugmentDraws,
    apply_augmentation,
    augment,
    draw_augmentation,
    eval_image,
)
from tiekd.data.kitti import KITTI
from tiekd.data.nyu import NYU
from tiekd.pipeline.errors import ConfigError, DataError

HEIGHT, WIDTH = 64, 160
BLOCK = 8  # side of the constant blocks of the blocky test image, pixels

# PIL computes affine source coordinates in 16-bit fixed point, off by up to ~3e-3 pixel across a
# 160-pixel row; sources this close to a pixel border may round either way.
TIE_DISTANCE = 0.01

NOTHING = AugmentConfig(crop=(HEIGHT, WIDTH), p_rotate=0.0, p_flip=0.0, p_colour=0.0)


def random_image(seed: int = 0) -> np.ndarray:
    """uint8 (HEIGHT, WIDTH, 3), values 1..255 so that 0 can only mean 'rotated in from outside'."""
    return np.random.default_rng(seed).integers(1, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def blocky_image(seed: int = 0) -> np.ndarray:
    """uint8 image made of BLOCK x BLOCK constant blocks: bilinear and nearest resampling agree
    exactly wherever all four bilinear neighbours lie in one block."""
    blocks = np.random.default_rng(seed).integers(1, 256, (HEIGHT // BLOCK, WIDTH // BLOCK, 3))
    return np.kron(blocks, np.ones((BLOCK, BLOCK, 1))).astype(np.uint8)


def channel_map(image: np.ndarray) -> np.ndarray:
    """A depth-like float32 map equal to the image's red channel, to follow the geometry."""
    return image[..., 0].astype(np.float32)


def red_255(image: np.ndarray) -> np.ndarray:
    """The augmented image's red channel back on the 0..255 scale."""
    return np.round(image[..., 0].astype(np.float64) * 255.0)


def windows(array: np.ndarray, width: int) -> list[np.ndarray]:
    """All full-height windows of the given width, left to right."""
    return [array[:, left : left + width] for left in range(array.shape[1] - width + 1)]


def test_identity_when_nothing_is_drawn():
    image = random_image()
    maps = {"teacher": np.full((HEIGHT, WIDTH), 7.5, np.float32), "gt": channel_map(image)}
    out, out_maps = augment(image, maps, np.random.default_rng(0), NOTHING)
    assert out.dtype == np.float32 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, image.astype(np.float32) / np.float32(255))
    assert out_maps.keys() == maps.keys()
    for name in maps:
        assert out_maps[name].dtype == np.float32
        np.testing.assert_array_equal(out_maps[name], maps[name])


def test_eval_image_scales_to_unit_range():
    image = np.array([[[0, 51, 255]]], np.uint8)
    np.testing.assert_allclose(eval_image(image), [[[0.0, 0.2, 1.0]]], rtol=1e-7)
    assert eval_image(image).dtype == np.float32


@pytest.mark.parametrize("flip", [True, False])
def test_flip_and_crop_apply_identically_to_image_and_maps(flip):
    image = random_image()
    cfg = dataclasses.replace(NOTHING, crop=(HEIGHT, 96), p_flip=1.0 if flip else 0.0)
    for seed in range(5):
        out, maps = augment(image, {"gt": channel_map(image)}, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(maps["gt"], red_255(out))
        source = image[:, ::-1, 0] if flip else image[:, :, 0]
        assert any(np.array_equal(maps["gt"], w) for w in windows(source, 96))


def test_crop_size_and_vertical_offset_zero():
    rows = np.repeat(np.arange(1, 81, dtype=np.float32)[:, None], WIDTH, axis=1)  # row index + 1
    image = np.zeros((80, WIDTH, 3), np.uint8)
    cfg = AugmentConfig(crop=(HEIGHT, 96), p_rotate=0.0)
    for seed in range(10):
        out, maps = augment(image, {"gt": rows}, np.random.default_rng(seed), cfg)
        assert out.shape == (HEIGHT, 96, 3) and maps["gt"].shape == (HEIGHT, 96)
        np.testing.assert_array_equal(maps["gt"], rows[:HEIGHT, :96])  # the top rows, always


def test_random_top_moves_the_crop_down():
    rows = np.repeat(np.arange(1, 81, dtype=np.float32)[:, None], WIDTH, axis=1)
    cfg = dataclasses.replace(NOTHING, crop=(HEIGHT, 96), random_top=True)
    tops = set()
    for seed in range(20):
        image = np.zeros((80, WIDTH, 3), np.uint8)
        _, maps = augment(image, {"gt": rows}, np.random.default_rng(seed), cfg)
        top = int(maps["gt"][0, 0]) - 1
        np.testing.assert_array_equal(maps["gt"], rows[top : top + HEIGHT, :96])
        tops.add(top)
    assert len(tops) > 1 and tops <= set(range(80 - HEIGHT + 1))


def source_coordinates(shape: tuple[int, int], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """float64 (x, y) in the input sampled by each output pixel centre for a rotation by ``angle``
    degrees counter-clockwise as displayed (y down) about the image centre."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    x, y = x - width / 2, y - height / 2
    theta = np.radians(angle)
    return (np.cos(theta) * x - np.sin(theta) * y + width / 2, np.sin(theta) * x + np.cos(theta) * y + height / 2)


def nearest_rotation(values: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent float64 nearest rotation with 0 outside; also a mask of the pixels whose source
    is not within TIE_DISTANCE of a pixel border, where the reference and PIL may round apart."""
    xs, ys = source_coordinates(values.shape, angle)
    cols, rows = np.floor(xs).astype(int), np.floor(ys).astype(int)
    inside = (cols >= 0) & (cols < values.shape[1]) & (rows >= 0) & (rows < values.shape[0])
    sampled = values[rows.clip(0, values.shape[0] - 1), cols.clip(0, values.shape[1] - 1)]
    out = np.where(inside, sampled, 0)
    distance = np.minimum(np.abs(xs - np.round(xs)), np.abs(ys - np.round(ys)))
    return out, distance > TIE_DISTANCE


def bilinear_rotation(values: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent float64 bilinear rotation, with a mask of the pixels whose four neighbours all
    lie inside the input (the borders are the resampler's own business)."""
    xs, ys = source_coordinates(values.shape, angle)
    x, y = xs - 0.5, ys - 0.5  # interpolate between pixel centres
    col, row = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (col >= 0) & (col + 1 < values.shape[1]) & (row >= 0) & (row + 1 < values.shape[0])
    col, row = col.clip(0, values.shape[1] - 2), row.clip(0, values.shape[0] - 2)
    fx, fy = x - col, y - row
    v = values.astype(np.float64)
    top = v[row, col] * (1 - fx) + v[row, col + 1] * fx
    bottom = v[row + 1, col] * (1 - fx) + v[row + 1, col + 1] * fx
    return top * (1 - fy) + bottom * fy, inside


def with_rotation(seed: int, cfg: AugmentConfig) -> AugmentDraws:
    """The draws of a seed, forced to rotate."""
    draws = draw_augmentation(np.random.default_rng(seed), cfg)
    return dataclasses.replace(draws, rotate=True)


def test_rotation_matches_float64_references_nearest_for_maps():
    image = random_image()
    cfg = dataclasses.replace(NOTHING, rotate_teacher=False)
    for seed in range(4):
        draws = with_rotation(seed, cfg)
        maps = {TEACHER_KEY: channel_map(image), "gt": channel_map(image)}
        out, out_maps = apply_augmentation(image, maps, draws, cfg)
        expected, exact = nearest_rotation(image[..., 0].astype(np.float64), draws.angle)
        np.testing.assert_array_equal(out_maps["gt"][exact], expected[exact])
        assert exact.mean() > 0.9
        np.testing.assert_array_equal(out_maps[TEACHER_KEY], maps[TEACHER_KEY])  # the released code's defect
        for c in range(3):
            expected, interior = bilinear_rotation(image[..., c], draws.angle)
            np.testing.assert_allclose(out[..., c][interior] * 255.0, expected[interior], atol=1.0)
        rotate_teacher = dataclasses.replace(cfg, rotate_teacher=True)
        _, rotated_teacher = apply_augmentation(image, maps, draws, rotate_teacher)
        np.testing.assert_array_equal(rotated_teacher[TEACHER_KEY], out_maps["gt"])


def test_rotation_then_flip_and_crop_keep_image_and_maps_together():
    image = blocky_image()
    cfg = AugmentConfig(crop=(HEIGHT, 96), p_rotate=1.0, p_flip=0.5, p_colour=0.0, rotate_teacher=False)
    for seed in range(6):
        draws = draw_augmentation(np.random.default_rng(seed), cfg)
        maps = {"gt": channel_map(image), TEACHER_KEY: channel_map(image)}
        out, maps = apply_augmentation(image, maps, draws, cfg)
        rotated_image, _ = bilinear_rotation(image[..., 0], draws.angle)
        rotated_map, exact = nearest_rotation(image[..., 0].astype(np.float64), draws.angle)
        if draws.flip:
            rotated_image, rotated_map, exact = rotated_image[:, ::-1], rotated_map[:, ::-1], exact[:, ::-1]
        lefts = [
            left
            for left, (w, e) in enumerate(zip(windows(rotated_map, 96), windows(exact, 96)))
            if np.array_equal(w[e], maps["gt"][e])
        ]
        assert len(lefts) == 1
        left = lefts[0]
        unrotated = image[:, ::-1, 0] if draws.flip else image[:, :, 0]
        np.testing.assert_array_equal(maps[TEACHER_KEY], unrotated[:, left : left + 96])
        interior = maps["gt"] > 0
        interior[[0, -1]] = interior[:, [0, -1]] = False
        expected_image = rotated_image[:, left : left + 96]
        np.testing.assert_allclose(red_255(out)[interior], expected_image[interior], atol=1.0)
        # Bilinear image and nearest map agree exactly inside the constant blocks.
        assert np.mean(red_255(out)[interior] == maps["gt"][interior]) > 0.7


def test_rotated_maps_hold_only_input_values_or_zero():
    image = random_image()
    cfg = dataclasses.replace(NOTHING, p_rotate=1.0)
    out, maps = augment(image, {"gt": channel_map(image) / 4}, np.random.default_rng(3), cfg)
    assert set(np.unique(maps["gt"])) <= set(np.unique(channel_map(image) / 4)) | {0.0}
    blank = maps["gt"] == 0
    assert blank[0].any() and blank[-1].any()  # corners rotated in from outside
    np.testing.assert_array_equal(out[blank], 0.0)


def test_colour_changes_only_the_image_as_gamma_then_factors():
    image = random_image()
    maps = {"gt": channel_map(image)}
    cfg = dataclasses.replace(NOTHING, p_colour=1.0)
    out, out_maps = augment(image, maps, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out_maps["gt"], maps["gt"])
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, eval_image(image))
    x = image.astype(np.float64) / 255.0
    gammas = []
    for c in range(3):
        keep = out[..., c] < 1.0  # unclipped pixels: log out = gamma log x + log(brightness colour_c)
        gamma, log_factor = np.polyfit(np.log(x[..., c][keep]), np.log(out[..., c][keep]), 1)
        fitted = np.exp(log_factor) * x[..., c][keep] ** gamma
        np.testing.assert_allclose(fitted, out[..., c][keep], rtol=1e-5)
        assert 0.9 <= gamma <= 1.1 and 0.81 <= np.exp(log_factor) <= 1.21
        gammas.append(gamma)
    np.testing.assert_allclose(gammas, gammas[0], rtol=1e-4)  # one gamma for all channels


def test_draws_do_not_depend_on_the_maps_or_the_colour_switch():
    image = blocky_image()
    gt = channel_map(image)
    cfg = AugmentConfig(crop=(HEIGHT, 96), p_rotate=0.5, p_flip=0.5, p_colour=1.0)
    for seed in range(5):
        alone, _ = augment(image, {}, np.random.default_rng(seed), cfg)
        with_maps, maps = augment(image, {"teacher": gt, "gt": gt}, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(alone, with_maps)
        no_colour = dataclasses.replace(cfg, p_colour=0.0)
        _, maps_no_colour = augment(image, {"gt": gt}, np.random.default_rng(seed), no_colour)
        np.testing.assert_array_equal(maps["gt"], maps_no_colour["gt"])


def test_deterministic_given_the_seed():
    image = random_image()
    maps = {"gt": channel_map(image)}
    cfg = AugmentConfig(crop=(HEIGHT, 96))
    first = augment(image, maps, np.random.default_rng(42), cfg)
    again = augment(image, maps, np.random.default_rng(42), cfg)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1]["gt"], again[1]["gt"])
    others = [augment(image, maps, np.random.default_rng(s), cfg)[0] for s in range(43, 48)]
    assert not any(np.array_equal(first[0], other) for other in others)


def test_kitti_defaults_give_the_paper_crop():
    image = np.full((352, 1216, 3), 128, np.uint8)
    gt = np.ones((352, 1216), np.float32)
    out, maps = augment(image, {"gt": gt}, np.random.default_rng(0), AugmentConfig())
    assert out.shape == (352, 704, 3) and maps["gt"].shape == (352, 704)


def test_crop_larger_than_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--crop 352x704.*64x160"):
        augment(random_image(), {}, np.random.default_rng(0), AugmentConfig())


def test_misaligned_map_is_a_data_error():
    with pytest.raises(DataError, match="'gt'"):
        maps = {"gt": np.zeros((HEIGHT, 10), np.float32)}
        augment(random_image(), maps, np.random.default_rng(0), NOTHING)


COLOUR_ONLY = dataclasses.replace(NOTHING, p_colour=1.0)
"""Colour augmentation on every sample, no geometry."""


def colour_draws(gamma: float, brightness: float, factors) -> AugmentDraws:
    """Draws that only colour the image, with the given factors."""
    return AugmentDraws(False, 0.0, False, 0.0, 0.0, True, gamma, brightness, np.asarray(factors, np.float64))


@pytest.mark.parametrize("dataset", [KITTI, NYU], ids=lambda d: d.name)
def test_released_form_equals_the_released_colour_aug(dataset):
    """Fixed seeds, the dataset's ranges: the released ColorAug on the BGR image, exactly."""
    cfg = dataclasses.replace(COLOUR_ONLY, colour_aug="released", brightness_range=dataset.brightness_range)
    image = random_image(3)
    for seed in range(8):
        draws = draw_augmentation(np.random.default_rng(seed), cfg)
        out, _ = apply_augmentation(image, {}, draws, cfg)
        bgr = color_aug_released(image[..., ::-1], draws.gamma, draws.brightness, draws.channel_factors)
        np.testing.assert_array_equal(out, (bgr[..., ::-1] / 255.0).astype(np.float32))
        # What the network sees: tiekd normalises [0, 1] inside the student, the release 0..255.
        mean, std = np.float32(IMAGENET_DEFAULT_MEAN), np.float32(IMAGENET_DEFAULT_STD)
        np.testing.assert_allclose((out - mean) / std, mmcv_normalize(bgr), rtol=0, atol=2e-6)


@pytest.mark.parametrize("dataset", [KITTI, NYU], ids=lambda d: d.name)
def test_bts_form_equals_bts_augment_image(dataset):
    cfg = dataclasses.replace(COLOUR_ONLY, brightness_range=dataset.brightness_range)
    image = random_image(4)
    for seed in range(8):
        draws = draw_augmentation(np.random.default_rng(seed), cfg)
        out, _ = apply_augmentation(image, {}, draws, cfg)
        reference = color_aug_bts(image / 255.0, draws.gamma, draws.brightness, draws.channel_factors)
        np.testing.assert_allclose(out, reference, rtol=2e-7, atol=1e-7)  # float32 rounding


def test_released_gamma_is_taken_on_0_to_255():
    """gamma 1.1 on 0..255: 100 -> 158.49 and every level from 155 up saturates; gamma 0.9: 255 -> 146.52."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    cfg = dataclasses.replace(COLOUR_ONLY, crop=(16, 16), colour_aug="released")
    bright = apply_augmentation(levels, {}, colour_draws(1.1, 1.0, [1, 1, 1]), cfg)[0][..., 0].ravel() * 255
    dark = apply_augmentation(levels, {}, colour_draws(0.9, 1.0, [1, 1, 1]), cfg)[0][..., 0].ravel() * 255
    assert bright[100] == pytest.approx(100**1.1, rel=1e-6) and 158.4 < bright[100] < 158.5
    assert bright[154] < 255 and (bright[155:] == 255).all()
    assert dark[255] == pytest.approx(255**0.9, rel=1e-6)
    bts_cfg = dataclasses.replace(cfg, colour_aug="bts")
    bts = apply_augmentation(levels, {}, colour_draws(1.1, 1.0, [1, 1, 1]), bts_cfg)[0][..., 0].ravel()
    assert bts[100] * 255 == pytest.approx(255 * (100 / 255) ** 1.1, rel=1e-6)  # darker: 91.3


def test_first_colour_factor_is_red_in_bts_and_blue_in_the_released_form():
    image = np.full((HEIGHT, WIDTH, 3), 100, np.uint8)
    draws = colour_draws(1.0, 1.0, [1.1, 1.0, 1.0])
    bts = apply_augmentation(image, {}, draws, COLOUR_ONLY)[0][0, 0] * 255
    released = apply_augmentation(image, {}, draws, dataclasses.replace(COLOUR_ONLY, colour_aug="released"))[0][0, 0]
    np.testing.assert_allclose(bts, [110, 100, 100], rtol=1e-6)
    np.testing.assert_allclose(released * 255, [100, 100, 110], rtol=1e-6)


def test_draws_come_in_the_documented_order_whatever_the_form_and_ranges():
    """rotate, angle, flip, top, left, colour, gamma, brightness, three colour factors."""
    kitti = AugmentConfig()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        expected = [rng.random(), rng.uniform(-2.5, 2.5), *rng.random(4), rng.uniform(0.9, 1.1)]
        expected += [rng.uniform(0.9, 1.1), *rng.uniform(0.9, 1.1, size=3)]
        for cfg in (kitti, dataclasses.replace(kitti, colour_aug="released")):
            d = draw_augmentation(np.random.default_rng(seed), cfg)
            assert (d.rotate, d.flip, d.colour) == (expected[0] < 0.5, expected[2] < 0.5, expected[5] < 0.5)
            got = [d.angle, d.top_fraction, d.left_fraction, d.gamma, d.brightness, *d.channel_factors]
            assert got == [expected[1], *expected[3:5], *expected[6:]]
        nyu = draw_augmentation(np.random.default_rng(seed), dataclasses.replace(kitti, brightness_range=(0.75, 1.25)))
        # The same underlying uniform, mapped to NYU's range; nothing else moves.
        assert (nyu.brightness - 0.75) / 0.5 == pytest.approx((expected[7] - 0.9) / 0.2, abs=1e-12)
        assert nyu.gamma == expected[6] and list(nyu.channel_factors) == expected[8:]


def test_unknown_colour_form_is_a_config_error():
    cfg = dataclasses.replace(COLOUR_ONLY, colour_aug="hsv")
    with pytest.raises(ConfigError, match=f"--colour-aug 'hsv' is not one of {', '.join(COLOUR_AUGS)}"):
        augment(random_image(), {}, np.random.default_rng(0), cfg)


def test_dataset_brightness_ranges():
    assert (KITTI.brightness_range, NYU.brightness_range) == ((0.9, 1.1), (0.75, 1.25))


@pytest.mark.parametrize("form", ["bts", "released"])
def test_the_level_table_gives_the_bits_of_the_whole_image_transform(form):
    """The colour augmentation looks each pixel up in a table of the 256 levels: bit for bit the
    transform computed on every pixel (an independent float path: _colour_bts / _colour_released)."""
    from tiekd.data.augment import _colour, _colour_bts, _colour_released, draw_augmentation

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    direct = _colour_bts if form == "bts" else _colour_released
    for _ in range(20):
        draws = draw_augmentation(rng, AugmentConfig(p_colour=1.0, brightness_range=(0.75, 1.25)))
        assert np.array_equal(_colour(image, draws, form), direct(image, draws))
