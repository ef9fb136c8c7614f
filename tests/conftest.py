"""Shared fixtures: one small sample dataset per session, helpers to run the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tiekd.cli import main

TESTS = Path(__file__).parent


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """8 training and 4 test frames in the KITTI layout (one test record without GT)."""
    from tiekd.data.sample.kitti import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("sample"), n_train=8, n_test=4, seed=0)


@pytest.fixture(scope="session")
def test_split_store(sample, tmp_path_factory):
    """The toy teacher ``row_prior`` cached over the sample's test split (3 of its 4 records have GT)."""
    from tiekd.stages.cache_teacher import CacheTeacherConfig, run

    path = tmp_path_factory.mktemp("store") / "s.zarr"
    config = CacheTeacherConfig(
        teacher="python:toy_teachers:row_prior",
        data_root=sample.data_root,
        split=sample.test_split,
        out=str(path),
        teacher_input=(88, 304),
        workers=0,
    )
    run(config)
    return path


@pytest.fixture(scope="session")
def nyu_sample(tmp_path_factory):
    """4 training and 2 test frames in NYU's layouts (BTS folders and the labeled .mat)."""
    from tiekd.data.sample.nyu import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("nyu_sample"), n_train=4, n_test=2, seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny training steps: on a busy 2-core machine two OpenMP
    threads run them ~10x slower, and a killed subprocess (OMP_NUM_THREADS=1) must add floats in
    the same order as the in-process run it is compared with."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli():
    """Run ``tiekd ARGS``; returns the click Result (exit_code, output, stderr)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def subprocess_env():
    """Environment for ``python -m tiekd.cli`` subprocesses that can import the toy teachers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server on loopback (SeaweedFS, tests/support/seaweedfs.py), one per session: started on
    first use, stopped at the end. Where it cannot start, CI fails and a local run skips with the reason."""
    from support.seaweedfs import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no S3 server: {e}")
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The S3 server's standard AWS variables, a fresh shard cache, and a fresh store URL of the test's own."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("TIEKD_SHARD_CACHE", str(tmp_path / "shard-cache"))
    s3_server.start_if_stopped()
    return s3_server
