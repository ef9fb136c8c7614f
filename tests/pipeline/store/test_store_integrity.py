"""Issue 9 on the store: frames not done, damaged frames, lost metadata, foreign --out, bad names,
and stores written by an older tiekd (formats 1 and 3, ``stores/format1.zarr``, ``stores/format3.zarr``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.store_damage import frame_bytes

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import CacheSpec, TeacherCache
from tiekd.pipeline.store.formats import STORE_FORMAT
from tiekd.pipeline.store.writer import CacheWriter

SPEC = CacheSpec("python:toy:make", "ab" * 32, "cd" * 32, (16, 24), None, True, 1e-3, 80.0)
IDS = [f"f{i}.png" for i in range(6)]
OLD_STORES = {1: Path(__file__).parent / "stores" / "format1.zarr", 3: Path(__file__).parent / "stores" / "format3.zarr"}
"""Written by tiekd at format 1 (main before format 2) and at format 3 (main at 35685ed, before format
4): frames 0-4 of the maps below done."""
CHECKSUMMED_FORMATS = (2, 3, 4)
"""Formats whose frames carry a CRC32C (format 1 checks the shard index only)."""
OLD_DEPTH = np.random.default_rng(7).uniform(1, 80, (6, 16, 24)).astype(np.float32)


def create(path, **kwargs):
    return CacheWriter.create_or_resume(
        str(path), teacher="toy", split="test", spec=SPEC, ids=IDS, extra_attrs={}, frames_per_shard=4, **kwargs
    )


def full_store(path, store_format=STORE_FORMAT):
    depth = np.random.default_rng(3).uniform(1, 80, (6, 16, 24)).astype(np.float32)
    create(path, store_format=store_format).write(list(range(6)), depth, np.zeros(6, np.int32))
    assert TeacherCache.open(path).attrs["tiekd_store_format"] == store_format
    return path


def readers(path):
    """The direct reader (local path) and zarr-python's (the same files through fsspec)."""
    direct, through_zarr = TeacherCache.open(path), TeacherCache.open(f"file://{path}")
    assert direct._reader is not None and through_zarr._reader is None
    return direct, through_zarr


class TestFramesNotDone:
    def test_depth_of_a_frame_not_done_is_refused_with_the_count(self, tmp_path):
        create(tmp_path / "s.zarr").write([0, 2], np.ones((2, 16, 24), np.float32), np.zeros(2, np.int32))
        for cache in readers(tmp_path / "s.zarr"):
            assert cache.depth(2).min() == 1.0
            with pytest.raises(StoreError, match=r"no map for frame 1 \(f1.png\): 4 of 6 frames are not stored"):
                cache.depth(1)

    def test_a_frame_done_after_opening_is_read(self, tmp_path):
        writer = create(tmp_path / "s.zarr")
        cache = TeacherCache.open(tmp_path / "s.zarr")
        writer.write([5], np.full((1, 16, 24), 2.0, np.float32), np.zeros(1, np.int32))
        assert cache.depth(5).max() == 2.0


class TestDamagedFrames:
    @pytest.mark.parametrize("store_format", CHECKSUMMED_FORMATS)
    def test_a_flipped_byte_in_each_frame_is_refused_and_only_that_frame(self, tmp_path, store_format):
        """Done-when of issue 9: every damaged frame refused, no undamaged one, by both readers."""
        path = full_store(tmp_path / "s.zarr", store_format)
        expected = [TeacherCache.open(path).depth(i) for i in range(6)]
        for damaged in range(6):
            shard, offset, nbytes = frame_bytes(path / "toy/test/depth", damaged, frames_per_shard=4)
            original = shard.read_bytes()
            for position in (offset, offset + nbytes // 2, offset + nbytes - 1):  # header, body, checksum
                raw = bytearray(original)
                raw[position] ^= 0x10
                shard.write_bytes(bytes(raw))
                for cache in readers(path):
                    for i in range(6):
                        if i == damaged:
                            with pytest.raises(StoreError, match=f"frame {i} of .* is damaged") as refused:
                                cache.depth(i)
                            assert "shard file" in refused.value.message and "verify --repair" in refused.value.message
                        else:
                            np.testing.assert_array_equal(cache.depth(i), expected[i])
            shard.write_bytes(original)

    def test_a_deleted_shard_of_done_frames_is_damage_not_zeros(self, tmp_path):
        path = full_store(tmp_path / "s.zarr")
        (path / "toy/test/depth/c/1/0/0").unlink()
        for cache in readers(path):
            with pytest.raises(StoreError, match="frame 4 of .* is damaged .*missing"):
                cache.depth(4)


class TestLostArrayMetadata:
    @pytest.mark.parametrize("damage", ["delete", "garbage", "not array metadata"])
    def test_reading_and_resuming_refused_in_one_line_and_nothing_recreated(self, tmp_path, damage):
        path = full_store(tmp_path / "s.zarr")
        meta = path / "toy/test/depth/zarr.json"
        {"delete": meta.unlink, "garbage": lambda: meta.write_text('{"zarr'),
         "not array metadata": lambda: meta.write_text('{"zarr_format": 3, "node_type": "array"}')}[damage]()
        before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
        with pytest.raises(StoreError, match="depth/zarr.json is missing or corrupt; run `tiekd cache verify --repair"):
            TeacherCache.open(path)
        with pytest.raises(StoreError, match="depth/zarr.json is missing or corrupt"):
            CacheWriter.create_or_resume(
                str(path), teacher="toy", split="test", spec=SPEC, ids=IDS, extra_attrs={}, frames_per_shard=32
            )
        assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before


class TestOutTarget:
    def test_a_zarr_v2_store_is_refused_untouched(self, tmp_path):
        v2 = tmp_path / "v2.zarr"
        zarr.create_array(v2, shape=(4,), dtype="int32", zarr_format=2)[:] = 7
        before = sorted(p.name for p in v2.rglob("*"))
        with pytest.raises(StoreError, match="is a zarr v2 store, not a tiekd store"):
            create(v2)
        assert sorted(p.name for p in v2.rglob("*")) == before

    def test_a_non_empty_directory_and_a_foreign_v3_store_are_refused(self, tmp_path):
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/passwd").write_text("root:x:0:0")
        with pytest.raises(StoreError, match="non-empty directory that is not a tiekd store"):
            create(tmp_path / "etc")
        assert [p.name for p in (tmp_path / "etc").iterdir()] == ["passwd"]
        zarr.create_group(tmp_path / "v3.zarr")
        with pytest.raises(StoreError, match="a zarr store that tiekd did not make"):
            create(tmp_path / "v3.zarr")
        (tmp_path / "file").write_text("x")
        with pytest.raises(StoreError, match="is a file"):
            create(tmp_path / "file")

    def test_new_empty_and_existing_tiekd_stores_are_accepted(self, tmp_path):
        (tmp_path / "empty").mkdir()
        for path in (tmp_path / "new.zarr", tmp_path / "empty", tmp_path / "new.zarr"):
            assert create(path).pending([0]) == [0]
        assert json.loads((tmp_path / "empty/zarr.json").read_text())["attributes"]["tiekd_store_format"] == STORE_FORMAT


@pytest.mark.parametrize("flag, name", [("--name", "../../x"), ("--split-name", "../.."), ("--name", "a/b"),
                                        ("--split-name", ".."), ("--name", "__x"), ("--name", "")])
def test_group_names_that_could_leave_the_store_are_refused(tmp_path, flag, name):
    teacher, split = (name, "test") if flag == "--name" else ("toy", name)
    with pytest.raises(StoreError, match=f"{flag} .* is not a valid store group name"):
        CacheWriter.create_or_resume(str(tmp_path / "s.zarr"), teacher=teacher, split=split, spec=SPEC, ids=IDS,
                                     extra_attrs={})
    assert not (tmp_path / "s.zarr").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("store_format", OLD_STORES)
class TestOlderStores:
    def test_read_by_both_readers_with_its_maps(self, store_format):
        for cache in readers(OLD_STORES[store_format]):
            assert cache.attrs["tiekd_store_format"] == store_format and cache.done.tolist() == [True] * 5 + [False]
            for i in range(5):
                assert np.abs(cache.depth(i) - OLD_DEPTH[i]).max() <= 1 / 512 + 1e-6
            with pytest.raises(StoreError, match="1 of 6 frames are not stored"):
                cache.depth(5)

    def test_resumed_in_its_own_format(self, tmp_path, store_format):
        path = shutil.copytree(OLD_STORES[store_format], tmp_path / "old.zarr")
        writer = create(path)
        assert writer.pending(list(range(6))) == [5]
        writer.write([5], OLD_DEPTH[5:], np.zeros(1, np.int32))
        cache = TeacherCache.open(path)
        assert cache.attrs["tiekd_store_format"] == store_format and cache.complete
        metadata = "toy/test/depth/zarr.json"
        assert (path / metadata).read_text() == (OLD_STORES[store_format] / metadata).read_text()
        assert np.abs(cache.depth(5) - OLD_DEPTH[5]).max() <= 1 / 512 + 1e-6
