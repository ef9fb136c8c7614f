"""The evaluation figure says what the maps show in the dataset's words, at the maps' aspect."""

import numpy as np
import pytest

from tiekd.data.kitti import KITTI
from tiekd.data.nyu import NYU
from tiekd.pipeline.pictures.figures import evaluation_figure, map_height


@pytest.mark.parametrize("dataset", [KITTI, NYU], ids=lambda d: d.name)
def test_titles_and_panel_height_follow_the_dataset(dataset):
    height, width = dataset.cache_crop
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, dataset.max_depth, (height, width))
    gt = np.where(rng.random((height, width)) < 0.05, depth, 0.0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    figure = evaluation_figure(
        rgb, depth, gt, None, title="t", depth_title="depth", max_depth=dataset.max_depth, n_bins=None,
        crop_name=dataset.cache_crop_name, gt_name=dataset.gt_name,
    )  # fmt: skip
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles[0] == f"input ({dataset.cache_crop_name})"
    assert f"ground truth ({dataset.gt_name})" in titles
    assert figure.get_figheight() == pytest.approx(map_height(2, height / width) + 0.4)


def test_nyu_panels_are_taller_than_kitti_panels():
    assert map_height(1, 480 / 640) > 2 * map_height(1, 352 / 1216) - 0.6

