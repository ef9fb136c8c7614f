"""Teachers that are not metric: each frame aligned to its GT or a metric group, the fit recorded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.commands import TEACHER, error_line
from support.own_images import write_description, write_images

from tiekd.data.own import read_gt
from tiekd.data.records import Record
from tiekd.pipeline.store.cache import DEPTH_SCALE, TeacherCache

QUANTUM = 1 / (2 * DEPTH_SCALE)
"""The store's rounding error (m)."""


def red_depth(image: np.ndarray) -> np.ndarray:
    """The truth the toy teacher red_inverse encodes: 1 + 19 x red in [0, 1], metres, float64."""
    return 1.0 + 19.0 * (image[..., 0].astype(np.float32) / 255).astype(np.float64)


@pytest.fixture
def labelled(tmp_path):
    """Four 48x64 images, sparse GT of their red-coded depth (40 %, 5 % of it wrong), a split, a description."""
    rng = np.random.default_rng(0)
    images = write_images(tmp_path / "data", range(4))
    lines = []
    for path in images:
        depth = red_depth(np.asarray(Image.open(path)))
        gt = np.where(rng.random(depth.shape) < 0.4, depth, 0)
        wrong = (gt > 0) & (rng.random(depth.shape) < 0.05)
        gt[wrong] = rng.uniform(1, 20, int(wrong.sum()))
        Image.fromarray(np.round(gt * 1000).astype(np.uint16)).save(path.with_suffix(".gt.png"))
        lines.append(f"{path.name} {path.with_suffix('.gt.png').name} 500")
    (tmp_path / "split.txt").write_text("\n".join(lines) + "\n")
    write_description(tmp_path / "rover.yaml")
    return tmp_path


def cache(cli, folder, *extra):
    return cli("cache-teacher", "--out", folder / "s.zarr", "--workers", "0", *extra)


def test_an_affine_inverse_teacher_aligned_to_gt_is_the_truth(cli, labelled):
    result = cache(cli, labelled, "--teacher", "python:toy_teachers:red_inverse", "--teacher-output", "relative-inverse",
                   "--data-root", labelled / "data", "--gt-root", labelled / "data", "--split", labelled / "split.txt",
                   "--dataset", labelled / "rover.yaml")  # fmt: skip
    assert result.exit_code == 0, result.output
    store = TeacherCache.open(labelled / "s.zarr")
    assert store.spec.teacher_output == "relative-inverse" and store.attrs["alignment"]["space"] == "inverse depth"
    for i, name in enumerate(store.ids):
        truth = red_depth(np.asarray(Image.open(labelled / "data" / name)))
        assert np.abs(store.depth(i) - truth).max() <= QUANTUM + 1e-3  # + the GT's own millimetre rounding
    # red_inverse = 2 / depth - 0.1, so 1 / depth = 0.5 x output + 0.05
    np.testing.assert_allclose(store.per_frame("align_scale"), 0.5, rtol=1e-3)
    np.testing.assert_allclose(store.per_frame("align_shift"), 0.05, atol=1e-4)
    gt = read_gt(labelled / "data", Record(rgb="", gt="000.gt.png", focal=1, line=1), scale=1000)
    assert (store.per_frame("align_pixels") < (gt > 0).sum() + 1).all()  # outliers were left out


def test_a_relative_teacher_aligned_to_a_metric_group_of_the_same_frames(cli, sample, tmp_path):
    common = ["--data-root", sample.data_root, "--split", sample.test_split, "--no-flip-tta"]
    assert cache(cli, tmp_path, "--teacher", TEACHER, "--name", "metric", *common).exit_code == 0
    result = cache(cli, tmp_path, "--teacher", "python:toy_teachers:row_prior_inverse", "--name", "relative",
                   "--teacher-output", "relative-inverse", "--align-to", f"{tmp_path / 's.zarr'}/metric/test", *common)  # fmt: skip
    assert result.exit_code == 0, result.output
    metric, relative = (TeacherCache.open(tmp_path / "s.zarr", name) for name in ("metric", "relative"))
    for i in range(len(metric)):
        assert np.abs(relative.depth(i) - metric.depth(i)).max() <= 2 * QUANTUM + 1e-4


def test_a_relative_teacher_without_a_reference_or_over_other_frames_is_one_line(cli, sample, tmp_path):
    common = ["--teacher", "python:toy_teachers:row_prior_inverse", "--teacher-output", "relative-inverse",
              "--data-root", sample.data_root]  # fmt: skip
    line = error_line(cache(cli, tmp_path, *common, "--split", sample.test_split))
    assert "TIE-KD needs metric maps; give a metric reference" in line and "--align-to" in line
    assert cache(cli, tmp_path, "--teacher", TEACHER, "--name", "m", "--data-root", sample.data_root,
                 "--split", sample.train_split).exit_code == 0  # fmt: skip
    line = error_line(
        cache(cli, tmp_path, *common, "--split", sample.test_split, "--align-to", f"{tmp_path / 's.zarr'}/m/train")
    )
    assert "holds other frames than this run" in line
