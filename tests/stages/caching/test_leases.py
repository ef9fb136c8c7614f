"""One writer per store shard, no group pulled from under its writer, and a failed first run that
leaves nothing behind (tiekd.pipeline.store.lease), with real processes."""

import subprocess
import time

import pytest
from support.commands import cache_args, error_line, tiekd_command

from tiekd.pipeline.store.cache import TeacherCache


def slow_run(sample, store, subprocess_env, *extra):
    """A cache-teacher of the test split that takes about 2 s a frame (8 frames, one batch each)."""
    args = cache_args(sample, store, sample.test_split, "--teacher-arg", "delay=2", "--batch-size", 1, *extra)
    return subprocess.Popen(tiekd_command(*args), env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_first_frame(store, process):
    """Wait until the run in ``process`` holds its leases (its group exists)."""
    deadline = time.monotonic() + 120
    while not (store / "row_prior" / "test" / ".writers").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_run_of_the_same_shards_is_refused_and_the_first_finishes(sample, tmp_path, cli, subprocess_env):
    store = tmp_path / "s.zarr"
    first = slow_run(sample, store, subprocess_env)
    try:
        wait_for_first_frame(store, first)
        line = error_line(cli(*cache_args(sample, store, sample.test_split)))
        assert "store shard 0 of" in line and f"being filled by pid {first.pid}" in line, line
        line = error_line(cli(*cache_args(sample, store, sample.test_split, "--overwrite")))
        assert "is being written (pid" in line, line
        line = error_line(cli("cache", "rm", store, "--teacher", "row_prior", "--force"))
        assert "is being written (pid" in line, line
    finally:
        output = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 0, output
    assert TeacherCache.open(store).complete


@pytest.mark.slow
def test_a_killed_writer_leaves_no_lease_behind(sample, tmp_path, cli, subprocess_env):
    """kill -9 runs no clean-up: the kernel drops the leases, so the rerun, even made differently,
    proceeds (the group it finds holds no frame, or is refused with the differences if it does)."""
    store = tmp_path / "s.zarr"
    first = slow_run(sample, store, subprocess_env)
    wait_for_first_frame(store, first)
    first.kill()
    first.wait()
    stored = int(TeacherCache.open(store, "row_prior", "test").done.sum())
    different = cli(*cache_args(sample, store, sample.test_split, "--teacher-input", "88x304"))
    if stored:
        assert "was made differently" in error_line(different)
        assert cli(*cache_args(sample, store, sample.test_split)).exit_code == 0
    else:
        assert different.exit_code == 0, different.output
    assert TeacherCache.open(store).complete


def test_a_failed_first_run_leaves_no_group_and_the_corrected_run_needs_no_overwrite(sample, tmp_path, cli):
    store = tmp_path / "s.zarr"
    failing = cache_args(sample, store, sample.test_split, "--teacher-arg", "fail_after=0")
    assert "failed on the batch" in error_line(cli(*failing))
    assert not (store / "row_prior" / "test").exists()
    result = cli(*cache_args(sample, store, sample.test_split, "--teacher-input", "88x304"))
    assert result.exit_code == 0, result.output
    assert TeacherCache.open(store).complete
    failing_later = cache_args(sample, store, sample.test_split, "--teacher-arg", "fail_after=0", "--overwrite")
    error_line(cli(*failing_later))
    assert not (store / "row_prior" / "test").exists()  # replaced, then failed: nothing half-made stays
