"""Tests of the procedural KITTI-format sample dataset (tiekd/data/sample/).

The dataset is read back with the real KITTI readers of tiekd.data.kitti, and the ray caster is
checked against closed-form depths computed independently in float64.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiekd.data import kitti
from tiekd.data.images import read_rgb
from tiekd.data.sample import kitti as sample
from tiekd.data.sample import render
from tiekd.data.sample import street as scene
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.errors import ConfigError

KITTI_MAX_DEPTH = 80.0  # metres; KITTI's GT stops here
# Five test frames cover all five dates; 6 + 5 frames take a couple of seconds.
N_TRAIN, N_TEST = 6, 5
RGB_PATTERN = re.compile(r"^(\d{4}_\d\d_\d\d)/\1_drive_\d{4}_sync/image_02/data/\d{10}\.png$")
GT_PATTERN = re.compile(r"^\d{4}_\d\d_\d\d_drive_\d{4}_sync/proj_depth/groundtruth/image_02/\d{10}\.png$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> sample.SampleDataset:
    out = tmp_path_factory.mktemp("sample")
    return write_sample_dataset(out, n_train=N_TRAIN, n_test=N_TEST, seed=0)


@pytest.fixture(scope="module")
def train(dataset) -> list[kitti.Record]:
    return kitti.read_split(dataset.train_split)


@pytest.fixture(scope="module")
def test(dataset) -> list[kitti.Record]:
    return kitti.read_split(dataset.test_split)


def _date(record: kitti.Record) -> str:
    return RGB_PATTERN.match(record.rgb).group(1)


def _drive(record: kitti.Record) -> str:
    return record.rgb.split("/")[1]


def _raw_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


def _all_files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


class TestLayout:
    def test_roots_and_split_files(self, dataset):
        out = dataset.data_root.parent
        assert dataset.data_root == out / "raw"
        assert dataset.gt_root == out / "gt"
        assert dataset.dense_gt_root == out / "dense"
        assert dataset.train_split == out / "splits" / "train.txt"
        assert dataset.test_split == out / "splits" / "test.txt"

    def test_split_records_parse(self, train, test):
        assert len(train) == N_TRAIN and len(test) == N_TEST
        for record in train + test:
            assert RGB_PATTERN.match(record.rgb), record.rgb
            assert record.gt is None or GT_PATTERN.match(record.gt), record.gt
            assert record.focal == sample.FOCALS[_date(record)]
            if record.gt is not None:
                # Same drive and frame as the image, without the date folder.
                assert record.gt.split("/")[0] == _drive(record)
                assert Path(record.gt).name == Path(record.rgb).name

    def test_published_focal_lengths(self):
        assert sample.FOCALS == {
            "2011_09_26": 721.5377,
            "2011_09_28": 707.0493,
            "2011_09_29": 718.3351,
            "2011_09_30": 707.0912,
            "2011_10_03": 718.856,
        }

    def test_frames_spread_over_dates_and_drives(self, train, test):
        assert {_date(r) for r in train} == set(kitti.IMAGE_SIZES)
        assert {_date(r) for r in test} == set(kitti.IMAGE_SIZES)
        assert len({_drive(r) for r in train}) > len(kitti.IMAGE_SIZES)
        assert not {_drive(r) for r in train} & {_drive(r) for r in test}

    def test_images_have_their_dates_real_size(self, dataset, train, test):
        for record in train + test:
            path = kitti.rgb_path(dataset.data_root, record)
            with Image.open(path) as image:
                assert image.mode == "RGB"
            rgb = read_rgb(path)
            assert rgb.shape == (*kitti.IMAGE_SIZES[_date(record)], 3)
            assert rgb.dtype == np.uint8

    def test_kb_crop_fits_every_image_and_depth_map(self, dataset, train, test):
        for record in train + test:
            rgb = read_rgb(kitti.rgb_path(dataset.data_root, record))
            assert kitti.kb_crop(rgb).shape == (kitti.KB_HEIGHT, kitti.KB_WIDTH, 3)
            if record.gt is not None:
                depth = kitti.read_depth(kitti.gt_path(dataset.gt_root, record))
                assert kitti.kb_crop(depth).shape == (kitti.KB_HEIGHT, kitti.KB_WIDTH)

    def test_gt_is_found_in_train_and_val_folders(self, dataset, train, test):
        for records, folder in ((train, "train"), (test, "val")):
            for record in records:
                if record.gt is not None:
                    path = kitti.gt_path(dataset.gt_root, record)
                    assert path == dataset.gt_root / folder / record.gt
                    assert (dataset.dense_gt_root / record.gt).is_file()

    def test_test_split_has_a_record_without_gt_and_no_final_newline(self, dataset, test):
        missing = [r for r in test if r.gt is None]
        assert missing
        for record in missing:
            name = Path(record.rgb).name
            drive = _drive(record)
            written = [p for p in dataset.gt_root.rglob(name) if drive in str(p)]
            written += [p for p in dataset.dense_gt_root.rglob(name) if drive in str(p)]
            assert written == []
        assert any(r.gt is not None for r in test)
        assert not dataset.test_split.read_text().endswith("\n")
        assert dataset.train_split.read_text().endswith("\n")
        assert not dataset.train_split.read_text().endswith("\n\n")

    @pytest.mark.parametrize(
        ("n_train", "n_test", "seed", "flag"),
        [(0, 2, 0, "--train"), (1, 1, 0, "--test"), (1, 2, -1, "--seed")],
    )
    def test_bad_arguments_name_their_flag(self, tmp_path, n_train, n_test, seed, flag):
        with pytest.raises(ConfigError, match=flag):
            write_sample_dataset(tmp_path, n_train=n_train, n_test=n_test, seed=seed)


class TestDepth:
    def _gt_records(self, train, test):
        return [r for r in train + test if r.gt is not None]

    def test_depth_pngs_are_16_bit_and_within_range(self, dataset, train, test):
        for record in self._gt_records(train, test):
            for root in (dataset.gt_root, dataset.dense_gt_root):
                path = kitti.gt_path(root, record)
                with Image.open(path) as image:
                    assert image.mode.startswith("I")
                depth = kitti.read_depth(path)
                assert depth.min() >= 0.0
                assert depth.max() <= KITTI_MAX_DEPTH

    def test_sparse_gt_is_lidar_like(self, dataset, train, test):
        for record in self._gt_records(train, test):
            sparse = kitti.read_depth(kitti.gt_path(dataset.gt_root, record))
            height = sparse.shape[0]
            assert 0.02 < (sparse > 0).mean() < 0.10
            # Nothing above the LiDAR's upper field of view, and measurements down to the bottom.
            assert not sparse[: height // 4].any()
            assert (sparse[height // 2 :] > 0).mean() > 0.05
            rows = np.flatnonzero((sparse > 0).any(axis=1))
            assert rows.min() > 0.25 * height

    def test_sparse_gt_equals_dense_gt_where_set(self, dataset, train, test):
        for record in self._gt_records(train, test):
            sparse = _raw_png(kitti.gt_path(dataset.gt_root, record))
            dense = _raw_png(dataset.dense_gt_root / record.gt)
            measured = sparse > 0
            assert measured.any()
            np.testing.assert_array_equal(sparse[measured], dense[measured])

    def test_dense_gt_is_dense_below_the_horizon(self, dataset, train, test):
        for record in self._gt_records(train, test):
            dense = kitti.read_depth(dataset.dense_gt_root / record.gt)
            height = dense.shape[0]
            assert (dense[int(0.6 * height) :] > 0).all()
            # Sky and surfaces beyond 80 m are left empty.
            assert (dense == 0).any()

    def test_ground_depth_grows_towards_the_horizon(self, dataset, train, test):
        for record in self._gt_records(train, test):
            dense = kitti.read_depth(dataset.dense_gt_root / record.gt)
            height = dense.shape[0]
            low = dense[int(0.9 * height) :]
            high = dense[int(0.6 * height) : int(0.7 * height)]
            assert np.median(low[low > 0]) < np.median(high[high > 0])

    def test_road_below_the_camera_is_a_plane_1_65_m_down(self, dataset, train, test):
        # On a road plane seen from height h with focal f, 1 / depth is linear in the image row
        # with slope 1 / (h f) whatever the pitch (up to cos(pitch) ~ 1), and zero at the horizon
        # row. The bottom rows of the centre column always see the road: the camera's own lane
        # is clear for 10 m.
        horizons = []
        for record in self._gt_records(train, test):
            dense = kitti.read_depth(dataset.dense_gt_root / record.gt).astype(np.float64)
            height, width = dense.shape
            rows = np.arange(height - 20, height)
            slope, intercept = np.polyfit(rows + 0.5, 1.0 / dense[rows, width // 2], 1)
            assert slope == pytest.approx(1.0 / (1.65 * record.focal), rel=0.01)
            horizons.append(-intercept / slope / height)
        # KITTI's horizon near 0.45 H, moved by the random pitch (0.4 degree, about 1.4 % of H).
        assert np.all(np.abs(np.array(horizons) - 0.45) < 0.06)
        assert np.mean(horizons) == pytest.approx(0.45, abs=0.015)


class TestDeterminism:
    def test_same_seed_same_bytes_and_frames_independent_of_counts(self, dataset, tmp_path):
        small = write_sample_dataset(tmp_path / "small", n_train=1, n_test=2, seed=0)
        reference = _all_files(dataset.data_root.parent)
        files = _all_files(small.data_root.parent)
        for name, content in files.items():
            if not name.startswith("splits"):
                assert reference[name] == content, name
        again = write_sample_dataset(tmp_path / "again", n_train=1, n_test=2, seed=0)
        assert _all_files(again.data_root.parent) == files

    def test_other_seed_other_images(self, dataset, tmp_path):
        other = write_sample_dataset(tmp_path, n_train=1, n_test=2, seed=1)
        for record in kitti.read_split(other.train_split) + kitti.read_split(other.test_split):
            mine = kitti.rgb_path(other.data_root, record).read_bytes()
            assert mine != kitti.rgb_path(dataset.data_root, record).read_bytes()

    def test_frames_differ(self, dataset, train, test):
        images = [kitti.rgb_path(dataset.data_root, r).read_bytes() for r in train + test]
        assert len(set(images)) == len(images)


class TestRayCasting:
    """The ray caster against closed-form depths, on a level camera."""

    FOCAL, HEIGHT, WIDTH = 700.0, 120, 160
    WALL_Z, SPHERE_CENTRE, SPHERE_RADIUS = 33.3, (0.0, 1.65, 12.0), 1.5  # the ball clears the road

    def _camera(self) -> scene.Camera:
        axes = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
        return scene.Camera(self.HEIGHT, self.WIDTH, self.FOCAL, axes)

    def _scene(self, solids: list[scene.Solid]) -> scene.Scene:
        return scene.Scene(
            road_centre=0.0,
            lane_width=3.5,
            road_half_width=5.5,
            sidewalk_width=2.0,
            verge=scene.GRASS,
            solids=solids,
            shadows=[],
            sun=np.array([0.0, 1.0, 0.0]),
            sky=(scene.SKY_HORIZON, scene.SKY_ZENITH),
            exposure=1.0,
            texture_seed=0,
        )

    def _pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 (x, y) image-plane coordinates of the pixel centres, (H, W) each; y down."""
        x = (np.arange(self.WIDTH) + 0.5 - self.WIDTH / 2) / self.FOCAL
        y = (np.arange(self.HEIGHT) + 0.5 - self.HEIGHT / 2) / self.FOCAL
        return np.meshgrid(x, y)

    def test_rays_have_unit_forward_component(self):
        rng = np.random.default_rng(0)
        camera = scene.sample_camera(rng, height=50, width=80, focal=700.0)
        rays = render.ray_directions(camera).astype(np.float64)
        forward = np.tensordot(camera.axes[2], rays, axes=1)
        np.testing.assert_allclose(forward, 1.0, atol=1e-6)

    def test_ground_and_wall_depths(self):
        lo, hi = (-100.0, 0.0, self.WALL_Z), (100.0, 100.0, self.WALL_Z + 1)
        wall = scene.Solid(lo, hi, scene.FACADE, (1, 1, 1))
        camera = self._camera()
        hits = render.cast_rays(self._scene([wall]), camera, render.ray_directions(camera))
        _, y = self._pixel_rays()
        with np.errstate(divide="ignore"):
            ground = np.where(y > 0, scene.CAMERA_HEIGHT / y, np.inf)
        expected = np.minimum(ground, self.WALL_Z)
        np.testing.assert_allclose(hits.depth, expected, rtol=1e-5)
        np.testing.assert_array_equal(hits.part, np.where(ground < self.WALL_Z, 0, 1))
        on_wall = hits.part == 1
        np.testing.assert_array_equal(hits.normal[:, on_wall].T, [[0.0, 0.0, -1.0]] * on_wall.sum())

    def test_sphere_depth(self):
        centre, radius = np.array(self.SPHERE_CENTRE), self.SPHERE_RADIUS
        centre_xyz = self.SPHERE_CENTRE
        ball = scene.Solid(centre_xyz, centre_xyz, scene.FOLIAGE, (1, 1, 1), radius)
        camera = self._camera()
        hits = render.cast_rays(self._scene([ball]), camera, render.ray_directions(camera))
        x, y = self._pixel_rays()
        # Rays (x, -y, 1) from the camera: solve |c + t d - centre| = r for the nearest t.
        d = np.stack([x, -y, np.ones_like(x)])
        offset = camera.centre - centre
        a = (d * d).sum(axis=0)
        b = np.tensordot(offset, d, axes=1)
        disc = b * b - a * (offset @ offset - radius**2)
        on_ball = disc > 0
        t = (-b - np.sqrt(np.where(on_ball, disc, 0.0))) / a
        np.testing.assert_array_equal(hits.part == 1, on_ball)
        np.testing.assert_allclose(hits.depth[on_ball], t[on_ball], rtol=1e-5)
        centre_pixel = hits.depth[self.HEIGHT // 2, self.WIDTH // 2]
        assert centre_pixel == pytest.approx(centre[2] - radius, rel=1e-4)

    def test_dense_depth_stops_at_max_depth(self):
        camera = self._camera()
        hits = render.cast_rays(self._scene([]), camera, render.ray_directions(camera))
        dense = render.dense_depth(hits)
        _, y = self._pixel_rays()
        with np.errstate(divide="ignore"):
            ground = np.where(y > 0, scene.CAMERA_HEIGHT / y, np.inf)
        expected = np.where(ground <= KITTI_MAX_DEPTH, ground, 0.0)
        np.testing.assert_allclose(dense, expected, rtol=1e-5)
