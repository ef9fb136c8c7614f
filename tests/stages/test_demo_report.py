"""The demo's report names things in its dataset's words."""

import pytest

from tiekd.stages.demo_report import method_label


@pytest.mark.parametrize("dataset, words", [("kitti", "LiDAR GT"), ("nyu", "Kinect GT")])
def test_the_demo_names_the_dataset_s_ground_truth(dataset, words):
    assert method_label("supervised", dataset) == f"supervised baseline ({words})"
