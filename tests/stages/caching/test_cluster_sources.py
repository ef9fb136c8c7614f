"""cache-teacher --cluster over image sources (--images, packed with --with-inputs) and with a relative
teacher aligned to a metric group (--align-to): a cluster of 2 worker processes stores what one process
stores. Both
runs share one cluster (``--cluster tcp://...``; ``local:N`` differs only in starting its own, see
test_cluster.py)."""

import distributed
import numpy as np
import pytest
from dask.utils import key_split
from support.commands import TEACHER

from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.inputs import PackedInputs
from tiekd.stages.caching.cluster import environment_kept

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _environment_kept():
    """The clusters started here must not leave their workers' OMP_NUM_THREADS=1 to later tests."""
    with environment_kept():
        yield


def cache_both(cli, images, store, *extra) -> None:
    """The toy teacher over ``images`` (group m, the images packed in the same run) and its inverse aligned
    to group m (group r)."""
    common = ["--images", images, "--fit", "crop", "--out", store, "--workers", "0", "--batch-size", "1",
              "--frames-per-shard", "2", "--teacher-input", "88x304", "--no-flip-tta", *extra]  # fmt: skip
    metric = cli("cache-teacher", "--teacher", TEACHER, "--name", "m", "--with-inputs", *common)
    assert metric.exit_code == 0, metric.output
    relative = cli("cache-teacher", "--teacher", "python:toy_teachers:row_prior_inverse", "--name", "r",
                   "--teacher-output", "relative-inverse", "--align-to", f"{store}/m/unlabelled", *common)  # fmt: skip
    assert relative.exit_code == 0, relative.output
    if extra:
        assert "on 2 workers" in metric.output and "on 2 workers" in relative.output


def test_images_and_an_aligned_relative_teacher_on_a_local_cluster_equal_one_process(cli, tmp_path):
    sample = write_sample_dataset(tmp_path / "sample", n_train=1, n_test=2, n_unlabelled=4)
    cache_both(cli, sample.unlabelled, tmp_path / "one.zarr")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as stream:  # every task the scheduler runs meanwhile
            cache_both(cli, sample.unlabelled, tmp_path / "two.zarr", "--cluster", cluster.scheduler_address)
    listed = [task for task in stream.data if key_split(task["key"]) == "list_part"]
    assert len(listed) == 2, "each of the two runs lists its one part (4 images) on a worker"
    for name in ("m", "r"):
        one, two = (TeacherCache.open(tmp_path / f"{s}.zarr", name) for s in ("one", "two"))
        assert len(two) == 4 and two.complete and two.ids == one.ids and two.sources == one.sources
        for array in ("depth", "done", "clipped"):  # bit for bit
            np.testing.assert_array_equal(two._group[array][:], one._group[array][:], err_msg=f"{name} {array}")
    one, two = (PackedInputs.open(str(tmp_path / f"{s}.zarr"), "unlabelled") for s in ("one", "two"))
    assert two.ids == one.ids and two.done.all() and two.attrs["split_sha256"] == one.attrs["split_sha256"]
    for i in range(len(one)):
        np.testing.assert_array_equal(two.image(i), one.image(i))
    one, two = (TeacherCache.open(tmp_path / f"{s}.zarr", "r") for s in ("one", "two"))
    assert two.attrs["alignment"]["reference"] == f"{tmp_path / 'two.zarr'}/m/unlabelled"
    for key in ("teacher_output", "space", "fit"):
        assert two.attrs["alignment"][key] == one.attrs["alignment"][key]
    for array in ("align_scale", "align_shift", "align_pixels"):
        np.testing.assert_array_equal(two.per_frame(array), one.per_frame(array), err_msg=array)
    assert (two.per_frame("align_pixels") > 0).all()
