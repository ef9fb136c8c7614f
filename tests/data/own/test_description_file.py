"""``--dataset PATH.yaml``: a lab's own dataset described in a file, taken wherever kitti/nyu are."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.commands import error_line
from support.own_images import write_description, write_images, write_split

from tiekd.data.images import write_depth_png
from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.inputs import PackedInputs
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.training.config import TrainStudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_description_file_fills_the_presets(tmp_path):
    path = write_description(tmp_path / "rover.yaml")
    dataset = get_dataset(str(path))
    assert (dataset.name, dataset.cache_crop, dataset.train_crop, dataset.n_bins) == (
        "lab-rover",
        (48, 64),
        (32, 48),
        32,
    )
    assert dataset.cache_crop_name == "whole image" and dataset.source == str(path.resolve())
    cfg = TrainStudentConfig(data_root=tmp_path, split=tmp_path / "s", out=tmp_path / "o", dataset=str(path))
    assert (cfg.crop, cfg.n_bins, cfg.min_depth, cfg.max_depth, cfg.loss_top_row) == ((32, 48), 32, 0.1, 20.0, 0)
    cache = CacheTeacherConfig(teacher="t", data_root=tmp_path, split=tmp_path / "s", out="o", dataset=str(path))
    assert cache.crop == (48, 64)


def test_a_crop_is_taken_only_when_asked(tmp_path):
    path = write_description(tmp_path / "r.yaml", crop="[40, 60]", crop_anchor="bottom-centre")
    dataset = get_dataset(str(path))
    assert dataset.cache_crop == (40, 60) and dataset.cache_crop_box((48, 64)) == (8, 2)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"crop_anchor": "top"}, "crop_anchor 'top' is not one of centre, bottom-centre"),
        ({"crop": "[64, 64]"}, r"crop \[64, 64\] is larger than image_size \[48, 64\]"),
    ],
)
def test_a_bad_description_is_one_line(tmp_path, extra, message):
    path = write_description(tmp_path / "r.yaml", **extra)
    with pytest.raises(ConfigError, match=message):
        get_dataset(str(path))


def test_cache_and_train_on_a_described_dataset(tmp_path, cli):
    """Maps are stored at the whole 48x64 image; a student trains on 32x48 crops of it."""
    description = write_description(tmp_path / "rover.yaml")
    images = write_images(tmp_path / "data" / "a", range(4))
    split = write_split(tmp_path / "train.txt", images, tmp_path / "data")
    store = tmp_path / "s.zarr"
    common = ["--data-root", tmp_path / "data", "--split", split, "--dataset", description, "--workers", "0"]
    result = cli("cache-teacher", "--teacher", "python:toy_teachers:indoor_prior", "--out", store, *common)
    assert result.exit_code == 0, result.output
    cache = TeacherCache.open(store)
    assert cache.depth_shape == (4, 48, 64) and cache.spec.dataset == "lab-rover"
    result = cli("train-student", "--cache", store, "--out", tmp_path / "run", "--student", "test_resnet",
                 "--no-pretrained", "--batch-size", "2", "--max-steps", "1", *common)  # fmt: skip
    assert result.exit_code == 0, result.output


def test_an_unknown_dataset_or_missing_file_is_one_line(tmp_path, cli):
    line = error_line(cli("sample-data", tmp_path / "x", "--dataset", tmp_path / "none.yaml"))
    assert "no such description file" in line
    line = error_line(cli("sample-data", tmp_path / "x", "--dataset", write_description(tmp_path / "r.yaml")))
    assert "has no procedural sample" in line


def test_a_described_dataset_packs_with_its_own_gt_scale(tmp_path, cli):
    """``cache pack`` takes the GT's value per metre from the description (a YAML dataset has no built-in one)."""
    description = write_description(tmp_path / "rover.yaml")  # gt_scale: 1000
    images = write_images(tmp_path / "data" / "a", range(2))
    depth = np.full((48, 64), 2.5, np.float32)
    write_depth_png(tmp_path / "gt" / "a.png", depth, scale=1000.0)
    split = write_split(tmp_path / "train.txt", images, tmp_path / "data", gt={images[0]: "a.png"})
    result = cli("cache", "pack", "--data-root", tmp_path / "data", "--gt-root", tmp_path / "gt", "--split", split,
                 "--dataset", description, "--out", tmp_path / "s.zarr")  # fmt: skip
    assert result.exit_code == 0, result.output
    inputs = PackedInputs.open(str(tmp_path / "s.zarr"), "train")
    assert inputs.gt_scale == 1000.0 and (inputs.gt(0) == 2.5).all() and not inputs.gt(1).any()
    np.testing.assert_array_equal(inputs.image(1), np.asarray(Image.open(images[1]).convert("RGB")))
