"""The commands on a store on a real S3 server (SeaweedFS on loopback): cache-teacher writes it (and
resumes after kill -9 or a server that went away), train-student, evaluate and cache info/verify/rm
read it with the results of the local store; faults are one line and lose nothing stored."""

import json
import signal
import subprocess
import time
import uuid

import pytest
from support.commands import cache_args, error_line, evaluate_args, tiekd_command

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import TeacherCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def new_url() -> str:
    return f"s3://tiekd/{uuid.uuid4().hex[:12]}/s.zarr"


@pytest.fixture(scope="module")
def local_store(sample, tmp_path_factory):
    """The sample's train and test splits cached in a local folder, as the S3 tests cache them."""
    from click.testing import CliRunner

    from tiekd.cli import main

    path = tmp_path_factory.mktemp("local") / "s.zarr"
    for split in (sample.train_split, sample.test_split):
        result = CliRunner().invoke(main, [str(a) for a in cache_args(sample, path, split)])
        assert result.exit_code == 0, result.output
    return path


def evaluation(cli, sample, tmp_path, store, name, *extra):
    result = cli(*evaluate_args(sample, "--cache", store, "--split-name", "test", "--json", tmp_path / name, *extra))
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / name).read_text())


def training(cli, sample, tmp_path, store, name, workers, *extra, files=True):
    """Losses of a 2-step run from ``store``; ``files=False``: images and GT from the store's packed split."""
    args = [
        "train-student",
        "--cache",
        store,
        "--split-name",
        "train",
        *(("--data-root", sample.data_root) if files else ()),
        "--split",
        sample.train_split,
        "--student",
        "test_resnet",
        "--no-pretrained",
        "--out",
        tmp_path / name,
        "--scale",
        0.0625,
        "--batch-size",
        2,
        "--max-steps",
        2,
        "--workers",
        workers,
        "--device",
        "cpu",
        *extra,
    ]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["loss"] for line in (tmp_path / name / "steps.jsonl").read_text().splitlines()]


def test_cache_teacher_to_s3_then_every_reader_equals_the_local_store(sample, s3, local_store, tmp_path, cli,
                                                                     monkeypatch):  # fmt: skip
    url = new_url()
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the flag alone reaches the server
    for split in (sample.train_split, sample.test_split):
        result = cli(*cache_args(sample, url, split, "--s3-endpoint", s3.endpoint))
        assert result.exit_code == 0 and "store complete" in result.output, result.output
    endpoint = ("--s3-endpoint", s3.endpoint)
    assert_same_store_split(url, local_store, "train")
    remote = evaluation(cli, sample, tmp_path, url, "remote.json", *endpoint)
    local = evaluation(cli, sample, tmp_path, local_store, "local.json")
    assert remote["metrics"] == local["metrics"] and remote["per_image"] == local["per_image"]
    remote_losses = training(cli, sample, tmp_path, url, "remote", 2, *endpoint)  # forked loader workers
    assert remote_losses == training(cli, sample, tmp_path, local_store, "local", 0)
    info = json.loads(cli("cache", "info", url, "--json", *endpoint).output)
    assert [(c["split"], c["complete"], c["done"]) for c in info["caches"]] == [("test", True, 4), ("train", True, 8)]
    verified = cli("cache", "verify", url, *endpoint)
    assert verified.exit_code == 0 and "12 stored frames read, no problems" in verified.output, verified.output
    removed = cli("cache", "rm", url, "--teacher", "row_prior", "--split", "test", *endpoint)
    assert removed.exit_code == 0 and f"removed {url}/row_prior/test" in removed.output, removed.output
    info = json.loads(cli("cache", "info", url, "--json", *endpoint).output)
    assert [c["split"] for c in info["caches"]] == ["train"]


def assert_same_store_split(url, local, split):
    remote, here = TeacherCache.open(url, split=split), TeacherCache.open(local, split=split)
    assert remote.ids == here.ids
    for name in ("depth", "done", "clipped"):
        assert (remote._group[name][:] == here._group[name][:]).all(), name


def start_slow_cache(sample, url, env, delay):
    args = cache_args(sample, url, sample.test_split, "--teacher-arg", f"delay={delay}", "--batch-size", "1")
    return subprocess.Popen(tiekd_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_frames(url, n, process):
    deadline, cache = time.time() + 120, None
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
        try:
            cache = cache or TeacherCache.open(url)
            if cache.done.sum() >= n:  # one small GET a poll
                return
        except StoreError:  # not created yet
            continue


@pytest.mark.slow
def test_a_stopped_server_and_kill_9_mid_write_then_a_rerun_resumes(sample, s3, local_store, cli, subprocess_env):
    """The server stopped under a cache-teacher writing to it: one line, frames stored kept; then a
    cache-teacher killed with -9 mid-run; a rerun stores exactly the rest, equal to the local store."""
    url = new_url()
    process = start_slow_cache(sample, url, subprocess_env | s3.env, delay=0.5)
    wait_for_frames(url, 1, process)
    s3.stop()
    output = process.communicate(timeout=120)[0].decode()
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert process.returncode != 0 and "Traceback" not in output and len(errors) == 1, output
    assert f"cannot reach the S3 server for {url}" in errors[0] and "run the command again" in errors[0]
    s3.start()
    stored = TeacherCache.open(url).done.sum()
    assert stored >= 1, "frames stored before the server went away were lost"
    process = start_slow_cache(sample, url, subprocess_env | s3.env, delay=2.0)
    wait_for_frames(url, stored + 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = TeacherCache.open(url).done
    assert stored < partial.sum() < len(partial), "the kill must land mid-run"
    result = cli(*cache_args(sample, url, sample.test_split))
    assert result.exit_code == 0 and f"wrote {len(partial) - partial.sum()} frames" in result.output, result.output
    assert_same_store_split(url, local_store, "test")


def test_faults_are_one_line(sample, s3, cli, tmp_path, monkeypatch):
    url = new_url()
    assert cli(*cache_args(sample, url, sample.test_split)).exit_code == 0
    key = url.removeprefix("s3://") + "/row_prior/test/depth/c/1/0/0"
    data = bytearray(s3.files().cat(key))
    data[len(data) // 3] ^= 0xFF
    s3.files().pipe(key, bytes(data))
    line = error_line(cli(*evaluate_args(sample, "--cache", url, "--split-name", "test")))
    assert "is damaged" in line and f"shard file {url}/row_prior/test/depth/c/1/0/0" in line
    verified = cli("cache", "verify", url)
    assert verified.exit_code != 0 and f"{url}/row_prior/test/depth/c/1/0/0" in verified.output
    repaired = cli("cache", "verify", url, "--repair")  # marks the damaged frames not done, on the server
    assert repaired.exit_code == 0 and "marked 1 damaged frame(s) not done" in repaired.output, repaired.output
    again = cli(*cache_args(sample, url, sample.test_split))
    assert again.exit_code == 0 and "store complete" in again.output, again.output
    verified = cli("cache", "verify", url)  # read through this node's shard cache: no stale copy of the shard
    assert verified.exit_code == 0 and "4 stored frames read, no problems" in verified.output, verified.output
    line = error_line(cli(*cache_args(sample, "s3://no-such-bucket/s.zarr", sample.test_split)))
    assert "the bucket of s3://no-such-bucket/s.zarr" in line and "does not exist" in line
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert "S3 refused the credentials" in error_line(cli("cache", "info", url))


def test_the_lab_workflow_pack_once_put_it_on_s3_train_anywhere(sample, s3, tmp_path, cli):
    """The teacher pass packs the split beside its maps on S3; a node without the files trains from
    there as from the local store (forked loader workers), and a second run reads every frame from
    the node's shard cache: the server sends metadata only."""
    url, local = new_url(), tmp_path / "local.zarr"
    for out in (url, local):
        result = cli(*cache_args(sample, out, None, "--gt-root", sample.gt_root, "--with-inputs"))
        assert result.exit_code == 0 and "packed" in result.output, result.output
    remote = training(cli, sample, tmp_path, url, "remote", 2, files=False)
    assert remote == training(cli, sample, tmp_path, local, "local", 0, files=False)
    shards = [p.stat().st_size for p in (tmp_path / "shard-cache").iterdir() if p.suffix == ".shard"]
    assert len(shards) >= 8, "the images, GT and maps were not read through the shard cache"
    before = s3.sent_bytes()
    assert training(cli, sample, tmp_path, url, "again", 0, files=False) == remote
    assert s3.sent_bytes() - before < min(shards), "a frame was fetched from the server again"
