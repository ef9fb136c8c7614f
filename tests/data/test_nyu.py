"""NYU Depth v2: both layouts and the labeled .mat read back equal to their source, the BTS
split with its leading slash (also the real split files), the crops, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from support.nyu_extraction_reference import official_depth_mm, official_rgb
from support.paths import shared_split

from tiekd.data.augment import AugmentConfig, draw_augmentation
from tiekd.data.datasets import DistillationSamples
from tiekd.data.images import write_depth_png
from tiekd.data.nyu import NYU
from tiekd.data.records import Record
from tiekd.data.sample.nyu import official_test_folder, raw_depth, render
from tiekd.pipeline.errors import DataError

"""The project's shared folder beside the repository (CI has it at ../shared)."""


def labeled(nyu_sample) -> Path:
    return nyu_sample.test_data_root


def record(rgb: str, gt: str | None = None, line: int = 1) -> Record:
    return Record(rgb=rgb, gt=gt, focal=518.8579, line=line)


class TestLabeledFile:
    def test_matlab_v73_header_and_transposed_layout(self, nyu_sample):
        path = labeled(nyu_sample)
        head = path.read_bytes()[:128]
        assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
        assert h5py.is_hdf5(path)
        # scipy recognises the header as v7.3 and sends the reader to HDF5, as for MATLAB's own files.
        with pytest.raises(NotImplementedError, match="v7.3"):
            scipy.io.loadmat(path)
        with h5py.File(path, "r") as f:
            assert f["images"].shape == (4, 3, 640, 480) and f["images"].dtype == np.uint8
            for name in ("depths", "rawDepths"):
                assert f[name].shape == (4, 640, 480) and f[name].dtype == np.float32
                assert f[name].attrs["MATLAB_class"] == b"single"
            assert f["images"].attrs["MATLAB_class"] == b"uint8"
            source, depth = render(0, "labeled", 3)
            raw = raw_depth(0, 3, depth)
            assert 0.9 < (raw > 0).mean() < 1 and (raw[raw > 0] == depth[raw > 0]).all()
            # MATLAB's column-major I(y, x, c, n) is h5py's [n, c, x, y].
            for y, x, c in [(0, 0, 0), (10, 600, 1), (479, 639, 2), (200, 7, 1)]:
                assert f["images"][3, c, x, y] == source[y, x, c]
                assert f["depths"][3, x, y] == depth[y, x] and f["rawDepths"][3, x, y] == raw[y, x]

    def test_mat_reads_equal_the_source_and_the_folder_files(self, nyu_sample):
        """The .mat gives the folder's GT exactly and its image before the JPEG."""
        folder = official_test_folder(nyu_sample.train_split.parent.parent)
        with h5py.File(labeled(nyu_sample), "r") as f:
            for item in NYU.read_split(nyu_sample.test_split):
                number = int(item.rgb[-9:-4])
                image = NYU.read_image(labeled(nyu_sample), item)
                np.testing.assert_array_equal(image, official_rgb(f["images"][number]))
                np.testing.assert_array_equal(image[7:474, 7:632], render(0, "labeled", number)[0][7:474, 7:632])
                assert np.abs(NYU.read_image(folder, item).astype(float) - image).mean() < 3  # JPEG, quality 95
                gt = NYU.read_gt(labeled(nyu_sample), item)
                np.testing.assert_array_equal(gt, NYU.read_gt(folder, item))
                expected = official_depth_mm(f["rawDepths"][number]).astype(np.float32) / np.float32(1000)
                np.testing.assert_array_equal(gt, expected)
                assert 0.9 < (gt > 0).mean() < 1  # the raw depth's holes

    def test_mat_gt_is_the_raw_depth_as_bts_extracts_it(self, tmp_path):
        """A labeled file built here: rawDepths with holes and exact millimetres, depths in-painted."""
        rng = np.random.default_rng(5)
        raw = rng.uniform(0.5, 9.9, (2, 640, 480)).astype(np.float32)
        raw[:, :100] = (rng.integers(500, 9900, (2, 100, 480)) / 1000).astype(np.float32)  # k mm as float32
        raw[rng.random(raw.shape) < 0.2] = 0
        images = rng.integers(0, 256, (2, 3, 640, 480), dtype=np.uint8)
        path = tmp_path / "labeled.mat"
        with h5py.File(path, "w") as f:
            f["images"], f["rawDepths"], f["depths"] = images, raw, np.full(raw.shape, 3.0, np.float32)
        NYU.check_root(path, flag="--gt-root")
        for n in range(2):
            item = record(f"scene/rgb_{n:05d}.jpg", f"scene/sync_depth_{n:05d}.png")
            mm = official_depth_mm(raw[n])
            np.testing.assert_array_equal(NYU.read_gt(path, item), mm.astype(np.float32) / np.float32(1000))
            np.testing.assert_array_equal(NYU.read_image(path, item), official_rgb(images[n]))
            # Truncation of the float32 product: a float64 product gives other millimetres here.
            assert (mm != (raw[n].T.astype(np.float64) * 1000).astype(np.uint16)).any()

    @pytest.mark.parametrize("kept", [0.3, 0.95])
    def test_a_truncated_file_is_one_line(self, tmp_path, kept):
        """An interrupted download of the 2.8 GB file: HDF5 sees its end missing."""
        path = tmp_path / "labeled.mat"
        with h5py.File(path, "w") as f:
            f["images"], f["rawDepths"] = np.zeros((2, 3, 640, 480), np.uint8), np.zeros((2, 640, 480), np.float32)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * kept)])
        with pytest.raises(DataError, match=r"cannot be read as HDF5 \(truncated file: .*download nyu_depth_v2_labeled.mat again"):
            NYU.check_root(path, flag="--gt-root")

    def test_file_without_raw_depths_is_refused(self, tmp_path):
        path = tmp_path / "labeled.mat"
        with h5py.File(path, "w") as f:
            f["images"], f["depths"] = np.zeros((1, 3, 640, 480), np.uint8), np.zeros((1, 640, 480), np.float32)
        with pytest.raises(DataError, match="holds no 'images' and 'rawDepths' arrays; pass nyu_depth_v2_labeled.mat"):
            NYU.check_root(path, flag="--gt-root")

    def test_training_folders_hold_the_rendered_frames(self, nyu_sample):
        records = NYU.read_split(nyu_sample.train_split)
        for index, item in enumerate(records):
            source, depth = render(0, "train", index)
            image = NYU.read_image(nyu_sample.data_root, item)
            assert image.shape == (480, 640, 3) and np.abs(image.astype(float) - source).mean() < 3
            gt = NYU.read_gt(nyu_sample.gt_root, item)
            measured = gt > 0
            assert 0.9 < measured.mean() < 1 and np.abs(gt[measured] - depth[measured]).max() <= 0.5e-3 + 1e-6


class TestSplits:
    def test_leading_slash_is_relative_to_the_root(self, nyu_sample):
        lines = nyu_sample.train_split.read_text().splitlines()
        assert all(line.startswith("/") for line in lines)
        for item, line in zip(NYU.read_split(nyu_sample.train_split), lines):
            assert item.rgb == line.split()[0][1:] and (nyu_sample.data_root / item.rgb).is_file()

    @pytest.mark.parametrize("path", ["//etc/passwd", "/../outside/rgb_00001.jpg", "/a/../../rgb_00001.jpg"])
    def test_paths_that_escape_the_root_are_refused(self, tmp_path, path):
        split = tmp_path / "split.txt"
        split.write_text(f"{path} /a/sync_depth_00001.png 518.8579\n")
        with pytest.raises(DataError, match="escapes its root"):
            NYU.read_split(split)

    def test_the_real_split_files_parse_fully(self):
        """The BTS train split (24,231 lines, leading "/") and the 654-line official test split."""
        train = NYU.read_split(shared_split("nyu_train.txt"))
        test = NYU.read_split(shared_split("nyu_test.txt"))
        assert (len(train), len(test)) == (24231, 654)
        assert train[0] == record("kitchen_0028b/rgb_00045.jpg", "kitchen_0028b/sync_depth_00045.png", 1)
        assert test[0] == record("bathroom/rgb_00045.jpg", "bathroom/sync_depth_00045.png", 1)
        for item in train + test:
            assert not item.rgb.startswith("/") and item.rgb.split("/")[-1][:4] == "rgb_"
            assert item.gt.split("/")[-1] == item.rgb.split("/")[-1].replace("rgb_", "sync_depth_")[:-4] + ".png"
        assert max(int(r.rgb[-9:-4]) for r in test) < 1449  # frames of the labeled file


class TestCrops:
    def test_settings_of_the_authors_nyu_configs(self):
        assert (NYU.min_depth, NYU.max_depth, NYU.n_bins, NYU.sigma, NYU.loss_top_row) == (1e-3, 10.0, 49, 0.15, 0)
        assert NYU.cache_crop == (480, 640) and NYU.train_crop == (416, 544) and NYU.random_top

    def test_border_crop_and_eigen_crop(self):
        grid = np.arange(480 * 640).reshape(480, 640)
        np.testing.assert_array_equal(NYU.crop_to_train_region(NYU.crop_to_cache(grid)), grid[45:472, 43:608])
        mask = NYU.eval_mask("eigen", 480, 640)
        assert mask.sum() == (471 - 45) * (601 - 41) and mask[45:471, 41:601].all()

    def test_training_sample_is_a_random_crop_of_the_border_crop(self, nyu_sample):
        cfg = AugmentConfig(crop=(416, 544), p_rotate=0.0, p_flip=0.0, p_colour=0.0, random_top=True)
        samples = DistillationSamples(
            NYU.read_split(nyu_sample.train_split), nyu_sample.data_root, dataset=NYU, augment_cfg=cfg, seed=3,
            gt_root=nyu_sample.gt_root,
        )
        item = samples[(0, 1)]
        assert item["error"] == ""
        draws = draw_augmentation(np.random.default_rng([3, 0, 1]), cfg)
        top, left = int(draws.top_fraction * (427 - 416 + 1)), int(draws.left_fraction * (565 - 544 + 1))
        image = NYU.read_image(nyu_sample.data_root, samples.records[1])
        expected = image[45 + top : 45 + top + 416, 43 + left : 43 + left + 544] / np.float32(255)
        np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), expected)
        gt = NYU.read_gt(nyu_sample.gt_root, samples.records[1])[45 + top : 45 + top + 416, 43 + left : 43 + left + 544]
        np.testing.assert_array_equal(item["gt"][0].numpy(), gt)


class TestBadInput:
    def test_matlab_v5_file_is_refused_with_what_to_do(self, tmp_path):
        path = tmp_path / "nyu_depth_v2_labeled.mat"
        path.write_bytes(b"MATLAB 5.0 MAT-file, Platform: PCWIN64".ljust(128, b" ") + b"\x00" * 64)
        with pytest.raises(DataError, match=r"is a MATLAB v5/v7 file; h5py reads only MATLAB v7.3.*-v7.3"):
            NYU.check_root(path, flag="--data-root")

    def test_frame_beyond_the_file(self, nyu_sample):
        with pytest.raises(DataError, match=r"selects frame 99 but .* holds 4 frames"):
            NYU.check_image(labeled(nyu_sample), record("bedroom/rgb_00099.jpg", line=7))

    def test_missing_and_corrupt_jpeg(self, tmp_path):
        with pytest.raises(DataError, match="is not under --data-root"):
            NYU.check_image(tmp_path, record("room/rgb_00001.jpg"))
        (tmp_path / "room").mkdir()
        (tmp_path / "room" / "rgb_00001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        with pytest.raises(DataError, match="is not a readable image"):
            NYU.read_image(tmp_path, record("room/rgb_00001.jpg"))

    def test_gt_png_in_metres(self, tmp_path):
        write_depth_png(tmp_path / "room" / "sync_depth_00001.png", np.full((480, 640), 3.0), scale=1.0)
        with pytest.raises(DataError, match="metres, not the millimetres"):
            NYU.read_gt(tmp_path, record("room/rgb_00001.jpg", "room/sync_depth_00001.png"))

    def test_wrong_image_size(self, tmp_path):
        (tmp_path / "room").mkdir()
        Image.new("RGB", (320, 240)).save(tmp_path / "room" / "rgb_00001.jpg")
        with pytest.raises(DataError, match="is 240x320, but NYU Depth v2 images are 480x640"):
            NYU.read_full_image(tmp_path, record("room/rgb_00001.jpg"))

    def test_one_line_and_exit_status_from_the_cli(self, cli, nyu_sample, tmp_path):
        path = tmp_path / "old.mat"
        path.write_bytes(b"MATLAB 5.0 MAT-file".ljust(256, b" "))
        result = cli("evaluate", "--dataset", "nyu", "--cache", tmp_path / "none.zarr", "--data-root", path,
                     "--gt-root", path, "--split", nyu_sample.test_split)
        assert result.exit_code != 0 and "Traceback" not in result.output
        [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert "MATLAB v5/v7 file" in line

