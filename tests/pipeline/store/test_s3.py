"""Stores on a real S3 server (SeaweedFS on loopback): written and read through zarr's ObjectStore,
frames read from the local shard cache after the first read, faults as one line."""

import os
import uuid

import numpy as np
import pytest
from support.commands import TEACHER

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.cache_teacher import run as cache_run


def new_url() -> str:
    return f"s3://tiekd/{uuid.uuid4().hex[:12]}/s.zarr"


def write_store(sample, out: str) -> str:
    cache_run(CacheTeacherConfig(teacher=TEACHER, data_root=sample.data_root, split=sample.train_split, out=out,
                                 teacher_input=(88, 304), workers=0, frames_per_shard=2))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def local_store(sample, tmp_path_factory):
    return write_store(sample, str(tmp_path_factory.mktemp("local") / "s.zarr"))


@pytest.fixture(scope="module")
def url(sample, s3_server):
    """The sample's train split cached on the S3 server once for the module's readers (4 shards of 2)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        return write_store(sample, new_url())


def all_frames(cache: TeacherCache) -> np.ndarray:
    return np.stack([cache.depth(i) for i in range(len(cache))])


def cached_files(folder) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix == ".shard") if folder.exists() else []


def test_written_to_s3_equals_the_local_store(url, s3, local_store):
    remote, local = TeacherCache.open(url), TeacherCache.open(local_store)
    assert remote.ids == local.ids and remote.complete
    np.testing.assert_array_equal(all_frames(remote), all_frames(local))
    np.testing.assert_array_equal(remote.clipped, local.clipped)


def test_epochs_after_the_first_read_the_local_copies(url, s3, local_store, tmp_path):
    first = all_frames(TeacherCache.open(url))
    folder = tmp_path / "shard-cache"
    assert len(cached_files(folder)) == 4  # 8 frames, 2 a shard: each shard fetched once
    before = s3.sent_bytes()
    cache = TeacherCache.open(url)  # a new run: metadata from the server, frames from the copies
    opened = s3.sent_bytes()
    np.testing.assert_array_equal(all_frames(cache), first)
    assert s3.sent_bytes() == opened, "a frame was read from the server again"
    shard_bytes = sum(p.stat().st_size for p in cached_files(folder))
    assert opened - before < shard_bytes / 4, "opening read more than metadata"
    s3.stop()  # and with the server gone, the frames still read
    np.testing.assert_array_equal(
        all_frames(cache), np.stack([TeacherCache.open(local_store).depth(i) for i in range(8)])
    )


def test_a_damaged_local_copy_is_detected_and_fetched_again(url, s3, local_store, tmp_path):
    expected = all_frames(TeacherCache.open(url))
    copy = cached_files(tmp_path / "shard-cache")[0]
    data = bytearray(copy.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a frame's compressed bytes: its CRC32C fails
    copy.write_bytes(bytes(data))
    np.testing.assert_array_equal(all_frames(TeacherCache.open(url)), expected)
    assert copy.read_bytes() != bytes(data), "the damaged copy was not replaced"


def test_the_cache_stays_within_its_bound(url, s3, local_store, tmp_path, monkeypatch):
    all_frames(TeacherCache.open(url))
    sizes = [p.stat().st_size for p in cached_files(tmp_path / "shard-cache")]
    for p in cached_files(tmp_path / "shard-cache"):
        p.unlink()
    monkeypatch.setenv("TIEKD_SHARD_CACHE_GB", str(2.5 * max(sizes) / 1e9))
    np.testing.assert_array_equal(all_frames(TeacherCache.open(url)), all_frames(TeacherCache.open(local_store)))
    left = cached_files(tmp_path / "shard-cache")
    assert 2 <= len(left) < 4 and sum(p.stat().st_size for p in left) <= 2.5 * max(sizes)


def test_server_stopped_mid_read_is_one_line(url, s3):
    cache = TeacherCache.open(url)
    cache.depth(0)
    s3.stop()
    with pytest.raises(StoreError, match=r"cannot reach the S3 server for s3://tiekd/.*run the command again"):
        cache.depth(7)


def test_wrong_credentials_and_a_missing_bucket_are_one_line(url, s3, monkeypatch):
    with pytest.raises(StoreError, match="does not exist"):
        TeacherCache.open("s3://no-such-bucket/s.zarr")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="S3 refused the credentials for s3://tiekd/"):
        TeacherCache.open(url)


def test_the_endpoint_is_read_as_boto3_reads_it(s3, monkeypatch):
    from tiekd.pipeline.store.s3 import endpoint, set_endpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://service-specific:1")
    assert endpoint() == "http://service-specific:1"  # the S3-specific variable first, as boto3
    set_endpoint(s3.endpoint)  # --s3-endpoint wins over both
    assert endpoint() == s3.endpoint == os.environ["AWS_ENDPOINT_URL"]
