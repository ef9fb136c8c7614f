"""cache-teacher on a real dask.distributed cluster: equal to one process, also with a worker killed."""

import os
import signal
import subprocess
import time

import distributed
import pytest
from support.commands import cache_args, tiekd_command
from support.runs import assert_same_store

from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.caching.cluster import cluster_client, environment_kept, parse_cluster


@pytest.fixture(autouse=True)
def _environment_kept():
    """The clusters started here must not leave their workers' OMP_NUM_THREADS=1 to later tests."""
    with environment_kept():
        yield


def busy_worker(client, store, deadline: float) -> str:
    """A worker running a shard task while the store holds some frames but not all."""
    while time.time() < deadline:
        time.sleep(0.1)
        busy = [w for w, keys in client.processing().items() if any("cache_shard" in str(k) for k in keys)]
        try:
            done = int(TeacherCache.open(store).done.sum())
        except Exception:  # the group is still being created
            continue
        if busy and 2 <= done < 8:
            return busy[0]
    raise AssertionError("no worker was busy mid-run")


def stored_frames(store) -> int:
    try:
        return int(TeacherCache.open(store).done.sum())
    except Exception:  # the group is still being created
        return 0


@pytest.mark.slow
def test_killed_worker_mid_shard_equals_one_process(sample, tmp_path, cli, subprocess_env):
    """kill -9 of a worker process in the middle of its shard: dask moves the task, the completion
    mask skips what was stored, and the store equals a single-process run bit for bit."""
    cli(*cache_args(sample, tmp_path / "whole.zarr"))
    store = tmp_path / "s.zarr"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        args = cache_args(sample, store, None, "--teacher-arg", "delay=0.5", "--cluster", cluster.scheduler_address)
        args[args.index("--frames-per-shard") + 1] = "4"  # two shards of two batches each
        process = subprocess.Popen(
            tiekd_command(*args), env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        victim = busy_worker(client, store, time.time() + 120)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        output = process.communicate(timeout=300)[0]
        assert pid not in client.run(os.getpid).values(), "the killed worker was replaced"
    assert process.returncode == 0, output
    assert "store complete: 8 frames" in output and "Traceback" not in output
    assert_same_store(store, tmp_path / "whole.zarr")
    result = cli("cache", "verify", store)
    assert result.exit_code == 0 and "8 stored frames read, no problems" in result.output


@pytest.mark.slow
def test_local_cluster_equals_one_process(sample, tmp_path, cli):
    cli(*cache_args(sample, tmp_path / "whole.zarr"))
    result = cli(*cache_args(sample, tmp_path / "s.zarr", None, "--cluster", "local:2"))
    assert result.exit_code == 0, result.output
    assert "on 2 workers" in result.output and "wrote 8 frames" in result.output
    assert_same_store(tmp_path / "s.zarr", tmp_path / "whole.zarr")
    assert TeacherCache.open(tmp_path / "s.zarr").complete


@pytest.mark.slow
def test_shard_errors_are_one_line_from_the_workers(sample, tmp_path, cli):
    args = cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--cluster", "local:1")
    args[args.index("--teacher") + 1] = "python:toy_teachers:raising_teacher"
    result = cli(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "raising_teacher failed on the batch starting at" in result.output


@pytest.mark.parametrize("text", ["local:0", "local", "tcp://host", "http://host:80", "4"])
def test_bad_cluster_refused(text):
    with pytest.raises(ConfigError, match="is neither local:N"):
        parse_cluster(text)


def test_unreachable_scheduler_is_one_line(sample, tmp_path, cli, monkeypatch):
    import socket

    from tiekd.stages.caching import cluster as cache_cluster

    monkeypatch.setattr(cache_cluster, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--cluster", f"tcp://127.0.0.1:{port}"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--cluster tcp://127.0.0.1:{port}: cannot reach the dask scheduler" in result.output
    assert not (tmp_path / "s.zarr").exists()


def test_a_server_that_is_not_dask_is_one_line_in_time(sample, tmp_path, cli, monkeypatch):
    """A listening server that never answers dask's handshake (here: one that accepts and stays
    silent) held the Client forever, whatever its timeout."""
    import socket

    from tiekd.stages.caching import cluster as cache_cluster

    monkeypatch.setattr(cache_cluster, "CONNECT_TIMEOUT_S", 2.0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        start = time.monotonic()
        result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--cluster", f"tcp://127.0.0.1:{port}"))
        seconds = time.monotonic() - start
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nothing there answered as a dask scheduler within 2 s" in result.output
    assert seconds < 60, f"{seconds:.0f} s"  # bounded (2 s + 5 s of grace), not forever
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_ctrl_c_stops_a_local_cluster_in_one_line_and_keeps_the_frames(sample, tmp_path, subprocess_env):
    """Ctrl-C reaches the whole process group: the workers printed a traceback each."""
    store = tmp_path / "s.zarr"
    args = cache_args(sample, store, None, "--teacher-arg", "delay=1", "--batch-size", 1, "--cluster", "local:2")
    process = subprocess.Popen(tiekd_command(*args), env=subprocess_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while stored_frames(store) == 0:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=240)[0]
    assert process.returncode != 0 and "Traceback" not in output, output
    assert len(output.strip().splitlines()) <= 3, output  # the progress line, "Aborted!"
    assert stored_frames(store) >= 1


@pytest.mark.slow
def test_a_local_cluster_leaves_the_environment_as_it_was(sample, tmp_path, cli, monkeypatch):
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = dict(os.environ)
    result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--cluster", "local:1"))
    assert result.exit_code == 0, result.output
    assert dict(os.environ) == before


def test_local_cluster_workers_keep_glibc_malloc_settings(monkeypatch):
    """Not dask's MALLOC_TRIM_THRESHOLD_=65536, under which a worker listed video 1.5x slower
    (bench/bench_listing.py)."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with cluster_client("local:1") as client:
        assert list(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == [None]
