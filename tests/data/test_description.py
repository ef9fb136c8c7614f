"""Dataset descriptions: the presets the stages take from them, crops, and --dataset reaching the configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tiekd.data.description import CropBox
from tiekd.data.registry import DATASETS, get_dataset
from tiekd.pipeline.errors import ConfigError
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.evaluate import EvaluateConfig
from tiekd.stages.training.config import TrainStudentConfig

# The authors' KITTI settings (method.md sections 2, 3, 5, 6, 8), written out independently.
KITTI_PAPER = dict(crop=(352, 704), n_bins=257, min_depth=1e-3, max_depth=80.0, loss_top_row=110)


def test_kitti_presets_reach_the_training_config():
    cfg = TrainStudentConfig(data_root=Path("r"), split=Path("s"), out=Path("o"))
    assert {k: getattr(cfg, k) for k in KITTI_PAPER} == KITTI_PAPER


def test_given_options_win_over_the_presets():
    cfg = TrainStudentConfig(data_root=Path("r"), split=Path("s"), out=Path("o"), sigma=0.3, n_bins=64, crop=(8, 16))
    assert (cfg.sigma, cfg.n_bins, cfg.crop, cfg.max_depth) == (0.3, 64, (8, 16), 80.0)


def test_paper_sigma_comes_from_the_dataset_and_reaches_the_objective():
    from tiekd.stages.train_student import build_objective

    cfg = TrainStudentConfig(data_root=Path("r"), split=Path("s"), out=Path("o"))
    assert cfg.sigma is None and build_objective(cfg, torch.device("cpu")).sigma == get_dataset("kitti").sigma == 0.8


def test_cache_and_evaluation_configs_take_the_dataset_crops():
    cache = CacheTeacherConfig(teacher="t", data_root=Path("r"), split=Path("s"), out="o")
    assert (cache.crop, cache.min_depth, cache.max_depth) == ((352, 1216), 1e-3, 80.0)
    evaluation = EvaluateConfig(data_root=Path("r"), gt_root=Path("g"), split=Path("s"))
    assert (evaluation.crop, evaluation.min_depth, evaluation.max_depth) == ("garg", 1e-3, 80.0)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--dataset 'ddad' is not one of kitti"):
        get_dataset("ddad")


def test_relative_crop_box_takes_int_of_fraction_times_size():
    mask = CropBox(0.25, 0.75, 0.1, 0.9, relative=True).mask(10, 20)
    expected = np.zeros((10, 20), bool)
    expected[2:7, 2:18] = True
    np.testing.assert_array_equal(mask, expected)


def test_pixel_crop_box_and_no_crop():
    kitti = get_dataset("kitti")
    mask = CropBox(1, 3, 2, 5, relative=False).mask(4, 6)
    assert mask.sum() == 2 * 3 and mask[1:3, 2:5].all()
    assert kitti.eval_mask("none", 3, 4).all()
    with pytest.raises(ConfigError, match="--crop center is not an evaluation crop of KITTI"):
        kitti.check_eval_crop("center")


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_description_is_consistent(name):
    """The training crop fits the train region, which fits the cache crop; the loss rows are crop rows."""
    dataset = DATASETS[name]
    assert dataset.name == name
    assert all(c <= r for c, r in zip(dataset.train_crop, dataset.train_size))
    assert all(r <= c for r, c in zip(dataset.train_size, dataset.cache_crop))
    assert 0 <= dataset.loss_top_row < dataset.train_crop[0]
    assert 0 < dataset.min_depth < dataset.max_depth and dataset.n_bins >= 2 and dataset.sigma > 0
    assert dataset.eval_crop in dataset.eval_crops
