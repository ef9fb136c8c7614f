"""The KITTI data layer: split parsing, paths in both GT layouts, crops, readers."""

from pathlib import Path

import numpy as np
import pytest
from support.paths import shared_split

from tiekd.data.images import read_rgb
from tiekd.data.kitti import (
    IMAGE_SIZES,
    KB_HEIGHT,
    KB_WIDTH,
    KITTI,
    gt_path,
    kb_crop,
    kb_crop_box,
    read_depth,
    read_split,
    write_depth,
)
from tiekd.data.records import Record
from tiekd.pipeline.errors import ConfigError, DataError

LINE = (
    "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
    "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377"
)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "split.txt"
    path.write_text(text)
    return path


class TestReadSplit:
    def test_record_fields(self, tmp_path):
        [record] = read_split(write(tmp_path, LINE + "\n"))
        assert record == Record(
            rgb="2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png",
            gt="2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png",
            focal=721.5377,
            line=1,
        )

    def test_none_gt_blank_lines_and_no_final_newline(self, tmp_path):
        other = LINE.replace("0000000069", "0000000070").split()
        text = f"\n{LINE}\n\n{other[0]} None {other[2]}"
        records = read_split(write(tmp_path, text))
        assert [r.line for r in records] == [2, 4]
        assert records[1].gt is None

    @pytest.mark.parametrize(
        "text, fragment",
        [
            ("a.png b.png", ":1: expected 'RGB_PATH GT_PATH|None FOCAL'"),
            ("a.png b.png x", ":1: focal length 'x' is not a number"),
            ("/abs/a.png None 721", "is absolute or escapes its root"),
            ("../up/a.png None 721", "is absolute or escapes its root"),
            ("a.png ../../etc/passwd 721", "is absolute or escapes its root"),
            ("a.png None 1\na.png None 1", ":2: image a.png is listed twice (first on line 1)"),
            ("\n\n", "holds no records"),
        ],
    )
    def test_bad_records(self, tmp_path, text, fragment):
        with pytest.raises(DataError, match=None) as info:
            read_split(write(tmp_path, text))
        assert fragment in info.value.message

    def test_missing_file(self, tmp_path):
        with pytest.raises(DataError, match="does not exist; pass an existing file to --split"):
            read_split(tmp_path / "nope.txt")

    def test_a_directory_is_named_as_one(self, tmp_path):
        with pytest.raises(DataError, match=f"split file {tmp_path} is a directory, not a file"):
            read_split(tmp_path)

    def test_byte_order_mark_is_stripped(self, tmp_path):
        # Some Windows editors start a UTF-8 file with U+FEFF; it is not part of the first path.
        plain = read_split(write(tmp_path, LINE + "\n"))
        bom = tmp_path / "bom.txt"
        bom.write_bytes(b"\xef\xbb\xbf" + (LINE + "\n").encode())
        assert read_split(bom) == plain

    def test_published_eigen_files(self):
        test = read_split(shared_split("kitti_eigen_test.txt"))
        assert len(test) == 697 and sum(r.gt is None for r in test) == 45
        assert len(read_split(shared_split("kitti_eigen_train.txt"))) == 23158


class TestGtLayouts:
    record = Record(rgb="x.png", gt="d_sync/proj_depth/groundtruth/image_02/1.png", focal=1.0, line=3)

    @pytest.mark.parametrize("sub", ["", "train", "val"])
    def test_found_merged_and_as_downloaded(self, tmp_path, sub):
        path = tmp_path / sub / self.record.gt
        write_depth(path, np.full((2, 3), 5.0, np.float32))
        assert gt_path(tmp_path, self.record) == path

    def test_missing_names_line_and_root(self, tmp_path):
        with pytest.raises(DataError, match="split line 3.*looked in it and in its train/ and val/"):
            gt_path(tmp_path, self.record)

    def test_none_record_has_no_gt(self, tmp_path):
        assert gt_path(tmp_path, Record(rgb="x.png", gt=None, focal=1.0, line=1)) is None


class TestCrop:
    @pytest.mark.parametrize("date, size", sorted(IMAGE_SIZES.items()))
    def test_kb_crop_of_every_kitti_size(self, date, size):
        height, width = size
        top, left = kb_crop_box(height, width)
        assert (top, left) == (height - 352, (width - 1216) // 2)
        image = np.arange(height * width).reshape(height, width)
        crop = kb_crop(image)
        assert crop.shape == (KB_HEIGHT, KB_WIDTH)
        assert crop[0, 0] == image[top, left] and crop[-1, -1] == image[height - 1, left + 1215]

    def test_image_smaller_than_crop(self):
        with pytest.raises(DataError, match="smaller than the 352x1216 crop"):
            kb_crop_box(300, 1242)


class TestEvaluationCrops:
    def test_garg_bounds_at_kb_size(self):
        mask = KITTI.eval_mask("garg", KB_HEIGHT, KB_WIDTH)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (143, 349, 43, 1172)
        assert mask.sum() == (349 - 143) * (1172 - 43)

    def test_eigen_bounds_at_kb_size(self):
        mask = KITTI.eval_mask("eigen", KB_HEIGHT, KB_WIDTH)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (117, 321, 43, 1172)
        assert mask.sum() == (321 - 117) * (1172 - 43)

    def test_none_and_dtype(self):
        mask = KITTI.eval_mask("none", 4, 6)
        assert mask.dtype == np.bool_ and mask.shape == (4, 6) and mask.all()

    def test_unknown_crop_is_a_config_error(self):
        with pytest.raises(ConfigError, match="--crop"):
            KITTI.eval_mask("middle", 4, 6)


class TestReaders:
    def test_depth_png_round_trip_within_half_a_step(self, tmp_path):
        depth = np.array([[0.0, 1.0, 79.99], [12.3456, 0.002, 80.0]], np.float32)
        write_depth(tmp_path / "d.png", depth)
        back = read_depth(tmp_path / "d.png")
        assert back.dtype == np.float32 and np.abs(back - depth).max() <= 0.5 / 256 + 1e-6
        assert back[0, 0] == 0

    def test_sample_images_and_gt(self, sample):
        records = read_split(sample.test_split)
        with_gt = [r for r in records if r.gt]
        image = read_rgb(sample.data_root / with_gt[0].rgb)
        gt = read_depth(gt_path(sample.gt_root, with_gt[0]))
        assert image.dtype == np.uint8 and image.shape[:2] == gt.shape
        assert (gt > 0).any() and (gt == 0).any()

    def test_corrupt_and_8bit_depth(self, tmp_path):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        with pytest.raises(DataError, match="is not a readable image"):
            read_rgb(tmp_path / "bad.png")
        from PIL import Image

        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "eight.png")
        with pytest.raises(DataError, match="KITTI and NYU depth PNGs are 16-bit"):
            read_depth(tmp_path / "eight.png")


def test_a_split_path_too_long_for_the_file_system_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"split file .*\.\.\..* \(5[0-9]{3} characters\) cannot be used \(File name too long\)"):
        read_split(tmp_path / ("a" * 5000))
