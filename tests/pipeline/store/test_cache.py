"""The store: round trip, precision, resume marker, shard layout, refusal of other specs."""

import dataclasses

import numpy as np
import pytest

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import CacheSpec, TeacherCache, contiguous_runs, dequantise, quantise, shard_frames
from tiekd.pipeline.store.writer import CacheWriter

SPEC = CacheSpec(
    teacher_spec="python:toy:make",
    teacher_sha256="ab" * 32,
    split_sha256="cd" * 32,
    crop=(16, 24),
    teacher_input=None,
    flip_tta=True,
    min_depth=1e-3,
    max_depth=80.0,
)
IDS = [f"d/image_02/data/{i:010d}.png" for i in range(10)]


def create(path, spec=SPEC, **kwargs):
    return CacheWriter.create_or_resume(
        str(path), teacher="toy", split="test", spec=spec, ids=IDS, extra_attrs={}, frames_per_shard=4, **kwargs
    )


def test_quantisation_error_within_kitti_precision():
    depth = np.random.default_rng(0).uniform(1e-3, 80.0, (1000,)).astype(np.float32)
    assert np.abs(dequantise(quantise(depth)) - depth).max() <= 1 / 256
    assert quantise(np.array([1e-3]))[0] == 1, "0 is reserved for 'never written'"


def test_round_trip_and_resume_marker(tmp_path):
    writer = create(tmp_path / "s.zarr")
    depth = np.random.default_rng(1).uniform(1, 80, (3, 16, 24)).astype(np.float32)
    writer.write([3, 4, 9], depth, np.array([0, 5, 1], np.int32))
    cache = TeacherCache.open(tmp_path / "s.zarr")
    assert cache.ids == IDS and len(cache) == 10 and not cache.complete
    assert cache.done.nonzero()[0].tolist() == [3, 4, 9]
    assert np.abs(cache.depth(4) - depth[1]).max() <= 1 / 512 + 1e-6
    assert cache.depth_of(IDS[9]).dtype == np.float32
    assert cache.clipped[[3, 4, 9]].tolist() == [0, 5, 1]
    assert create(tmp_path / "s.zarr").pending(list(range(10))) == [0, 1, 2, 5, 6, 7, 8]
    assert cache.attrs["frames_per_shard"] == 4 and cache.attrs["depth_scale"] == 256


def test_finish_only_when_complete(tmp_path):
    writer = create(tmp_path / "s.zarr")
    writer.write(list(range(9)), np.ones((9, 16, 24), np.float32), np.zeros(9, np.int32))
    assert not writer.finish() and "completed" not in TeacherCache.open(tmp_path / "s.zarr").attrs
    writer.write([9], np.ones((1, 16, 24), np.float32), np.array([7], np.int32))
    assert writer.finish()
    assert TeacherCache.open(tmp_path / "s.zarr").attrs["clipped_pixels"] == 7


def test_other_spec_refused_with_differences_then_overwritten(tmp_path):
    create(tmp_path / "s.zarr").write([0], np.ones((1, 16, 24), np.float32), np.zeros(1, np.int32))
    other = dataclasses.replace(SPEC, flip_tta=False, crop=(16, 32))
    with pytest.raises(StoreError) as info:
        create(tmp_path / "s.zarr", spec=other)
    assert "crop: (16, 24) in the store vs (16, 32) now" in info.value.message
    assert "flip_tta: True in the store vs False now" in info.value.message
    assert TeacherCache.open(tmp_path / "s.zarr").done[0], "the refused run must not touch the store"
    create(tmp_path / "s.zarr", spec=other, overwrite=True)
    assert not TeacherCache.open(tmp_path / "s.zarr").done.any()


def test_open_picks_names_and_explains(tmp_path):
    create(tmp_path / "s.zarr")
    CacheWriter.create_or_resume(
        str(tmp_path / "s.zarr"), teacher="other", split="test", spec=SPEC, ids=IDS, extra_attrs={}
    )
    with pytest.raises(StoreError, match=r"holds 2 teachers \(other, toy\); choose one with --teacher"):
        TeacherCache.open(tmp_path / "s.zarr")
    assert len(TeacherCache.open(tmp_path / "s.zarr", teacher="toy")) == 10
    with pytest.raises(StoreError, match="holds no teacher 'x'"):
        TeacherCache.open(tmp_path / "s.zarr", teacher="x")
    with pytest.raises(StoreError, match="no teacher cache at"):
        TeacherCache.open(tmp_path / "none.zarr")


def test_opening_never_writes(tmp_path):
    create(tmp_path / "s.zarr").write([0], np.ones((1, 16, 24), np.float32), np.zeros(1, np.int32))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "s.zarr").rglob("*")}
    cache = TeacherCache.open(tmp_path / "s.zarr")
    cache.depth(0), cache.attrs, cache.complete
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s.zarr").rglob("*")} == before


def test_shards_partition_frames_on_shard_boundaries():
    owned = [shard_frames(10, i, 3, frames_per_shard=4) for i in range(3)]
    assert owned == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sorted(sum((shard_frames(23158, i, 4, frames_per_shard=32) for i in range(4)), [])) == list(range(23158))


def test_contiguous_runs_never_cross_a_shard():
    assert contiguous_runs([2, 3, 4, 5, 9], frames_per_shard=4) == [(2, 4, 0), (4, 6, 2), (9, 10, 4)]


def test_dask_view_equals_the_maps(tmp_path):
    writer = create(tmp_path / "s.zarr")
    depth = np.random.default_rng(2).uniform(1, 80, (10, 16, 24)).astype(np.float32)
    writer.write(list(range(10)), depth, np.zeros(10, np.int32))
    cache = TeacherCache.open(tmp_path / "s.zarr")
    lazy = cache.to_dask()
    assert lazy.chunks[0] == (4, 4, 2) and lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy.compute(), np.stack([cache.depth(i) for i in range(10)]))


def test_same_weights_under_another_path_is_the_same_teacher(tmp_path):
    create(tmp_path / "s.zarr").write([0], np.ones((1, 16, 24), np.float32), np.zeros(1, np.int32))
    moved = dataclasses.replace(SPEC, teacher_spec="python:elsewhere:make")
    assert create(tmp_path / "s.zarr", spec=moved).pending([0, 1]) == [1]
    other_weights = dataclasses.replace(SPEC, teacher_spec="python:elsewhere:make", teacher_sha256="ef" * 32)
    with pytest.raises(StoreError, match="teacher_sha256"):
        create(tmp_path / "s.zarr", spec=other_weights)


RACE = """
import sys, time
from tiekd.pipeline.store.cache import CacheSpec
from tiekd.pipeline.store.writer import CacheWriter
spec = CacheSpec("python:toy:make", "ab" * 32, "cd" * 32, (16, 24), None, True, 1e-3, 80.0)
while time.time() < float(sys.argv[2]):
    pass
CacheWriter.create_or_resume(sys.argv[1], teacher="toy", split="test", spec=spec, ids=[str(i) for i in range(10)],
                             extra_attrs={}, frames_per_shard=4)
"""


def test_processes_creating_one_store_at_the_same_instant_all_succeed(tmp_path):
    """--shard processes start together; the one that loses the creation race must open the store."""
    import subprocess
    import sys
    import time

    for round_ in range(2):
        store = tmp_path / f"s{round_}.zarr"
        start = time.time() + 3
        processes = [
            subprocess.Popen([sys.executable, "-c", RACE, str(store), str(start)], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1].decode() for p in processes]
        assert [p.returncode for p in processes] == [0] * 4, errors
        assert len(TeacherCache.open(store)) == 10


class TestInUse:
    """A reader notices its group removed or made again in its place, and says so in one line."""

    def filled(self, path, spec=SPEC):
        writer = create(path, spec, overwrite=True)
        writer.write(list(range(10)), np.full((10, 16, 24), 5.0, np.float32), np.zeros(10, np.int32))
        writer.finish()

    def test_an_unchanged_group_passes(self, tmp_path):
        self.filled(tmp_path / "s.zarr")
        cache = TeacherCache.open(tmp_path / "s.zarr")
        cache.require_unchanged()
        assert cache.depth(0)[0, 0] == pytest.approx(5.0, abs=1 / 256)

    def test_a_group_made_again_is_replaced(self, tmp_path):
        self.filled(tmp_path / "s.zarr")
        cache = TeacherCache.open(tmp_path / "s.zarr")
        self.filled(tmp_path / "s.zarr", dataclasses.replace(SPEC, teacher_sha256="ef" * 32))
        with pytest.raises(StoreError, match="was replaced while in use"):
            cache.require_unchanged()

    def test_reads_of_a_removed_group_say_removed_not_damaged(self, tmp_path):
        from tiekd.stages.cache_rm import remove

        self.filled(tmp_path / "s.zarr")
        cache = TeacherCache.open(tmp_path / "s.zarr")
        remove(str(tmp_path / "s.zarr"), teacher="toy")
        with pytest.raises(StoreError, match="was removed while in use"):
            cache.require_unchanged()
        with pytest.raises(StoreError, match="was removed while in use"):
            cache.depth(5)


class TestLocations:
    def test_a_file_url_is_the_local_store(self, tmp_path):
        writer = create(f"file://{tmp_path / 's.zarr'}")
        writer.write([0], np.full((1, 16, 24), 3.0, np.float32), np.zeros(1, np.int32))
        assert (tmp_path / "s.zarr" / "toy" / "test").is_dir()
        assert TeacherCache.open(f"file://{tmp_path / 's.zarr'}").depth(0)[0, 0] == pytest.approx(3.0, abs=1 / 256)

    @pytest.mark.parametrize("url", ["http://127.0.0.1:9/s.zarr", "https://127.0.0.1:9/s.zarr"])
    def test_an_http_store_is_never_written(self, url):
        """Refused before any connection (port 9 is the discard port: nothing listens)."""
        with pytest.raises(StoreError, match="is an HTTP store, which tiekd only reads"):
            create(url)

    def test_a_protocol_whose_package_is_missing_is_one_line(self):
        with pytest.raises(StoreError, match=r"sftp://host/s.zarr: .*paramiko.* \(tiekd does not install it\)"):
            TeacherCache.open("sftp://host/s.zarr")
