"""Two users of one S3 store at once (tiekd.pipeline.store.lease on S3, SeaweedFS on loopback), with real
processes: a second cache-teacher of the same group is refused in one line naming the first, --overwrite
and cache rm never pull the group from under it, its kill -9 blocks no rerun; two cache packs at once lose
nothing. The leases themselves: tests/pipeline/store/test_s3_lease.py."""

import subprocess
import time
import uuid

import numpy as np
import pytest
from support.commands import cache_args, error_line, tiekd_command

from tiekd.data.registry import get_dataset
from tiekd.pipeline.store import s3_lease
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.inputs import PackedInputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def new_url() -> str:
    return f"s3://tiekd/{uuid.uuid4().hex[:12]}/s.zarr"


def wait_for_shard_lease(group: str, process) -> None:
    """Wait until the run in ``process`` holds a shard lease of ``group``."""
    deadline = time.monotonic() + 120
    while not any("/shard-" in url for url in s3_lease.listed(f"{group}/.writers")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_cache_teacher_is_refused_and_a_killed_one_blocks_no_rerun(sample, s3, cli, subprocess_env):
    url = new_url()
    args = cache_args(sample, url, sample.test_split, "--teacher-arg", "delay=2", "--batch-size", 1)
    first = subprocess.Popen(tiekd_command(*args), env=subprocess_env | s3.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_shard_lease(f"{url}/row_prior/test", first)
        line = error_line(cli(*cache_args(sample, url, sample.test_split)))
        assert f"store shard 0 of {url}/row_prior/test is being filled by pid {first.pid} on " in line, line
        line = error_line(cli(*cache_args(sample, url, sample.test_split, "--teacher-input", "88x304")))
        assert "was made differently" in line, line  # another teacher's settings: never written into its group
        line = error_line(cli(*cache_args(sample, url, sample.test_split, "--overwrite")))
        assert f"{url}/row_prior/test is being written (pid {first.pid} on " in line, line
        line = error_line(cli("cache", "rm", url, "--teacher", "row_prior", "--force"))
        assert f"is being written (pid {first.pid} on " in line, line
    finally:
        first.kill()  # kill -9: no clean-up runs, its leases stay in the bucket
        first.wait()
    assert s3_lease.listed(f"{url}/row_prior/test/.writers"), "the killed run left no lease to test"
    result = cli(*cache_args(sample, url, sample.test_split))
    assert result.exit_code == 0, result.output  # the holder is gone from this host: its leases are stale at once
    assert TeacherCache.open(url).complete
    assert s3_lease.listed(f"{url}/row_prior/test/.writers") == [], "the rerun left its leases behind"


@pytest.mark.slow
def test_two_packs_at_once_lose_nothing(sample, s3, cli, subprocess_env):
    """Both start together: the creation lock serialises creating the packed split (before: KeyError 'ids'),
    the shard leases keep them off each other's frames; whichever is refused says so in one line."""
    url = new_url()
    args = ["cache", "pack", "--data-root", sample.data_root, "--gt-root", sample.gt_root,
            "--split", sample.train_split, "--out", url, "--frames-per-shard", 2]  # fmt: skip
    runs = [subprocess.Popen(tiekd_command(*args), env=subprocess_env | s3.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT) for _ in range(2)]  # fmt: skip
    for run in runs:
        output = run.communicate(timeout=300)[0].decode()
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        assert "Traceback" not in output, output
        assert run.returncode == 0 or (len(errors) == 1 and "is being filled by pid" in errors[0]), output
    rerun = cli(*args)
    assert rerun.exit_code == 0 and "packed split complete: 8 frames" in rerun.output, rerun.output

    kitti, inputs = get_dataset("kitti"), PackedInputs.open(url, "train")
    for i, record in enumerate(kitti.read_split(sample.train_split)):
        assert np.array_equal(inputs.image(i), kitti.crop_to_cache(kitti.read_full_image(sample.data_root, record)))
