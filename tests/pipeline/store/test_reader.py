"""The direct frame reader against zarr-python's own read of the same store."""

import numpy as np
import pytest
import zarr

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import CacheSpec, TeacherCache
from tiekd.pipeline.store.formats import READABLE_FORMATS, STORE_FORMAT
from tiekd.pipeline.store.reader import FrameReader, Layout, inner_layout, is_tiekd_layout
from tiekd.pipeline.store.writer import CacheWriter

WIDE = CacheSpec("python:toy:make", None, "cd" * 32, (16, 24), None, True, min_depth=1e-3, max_depth=255.0)
"""Up to 255 m, so neighbouring stored values differ by more than 2**15 and the delta wraps."""
IDS = [f"d/image_02/data/{i:010d}.png" for i in range(10)]


def create(path, frames_per_shard=4, store_format=STORE_FORMAT):
    return CacheWriter.create_or_resume(
        str(path), teacher="toy", split="test", spec=WIDE, ids=IDS, extra_attrs={}, frames_per_shard=frames_per_shard,
        store_format=store_format,
    )


def random_depth(n, seed=0):
    """White noise over the whole range: the hardest input for a delta filter."""
    return np.random.default_rng(seed).uniform(1e-3, 255.0, (n, 16, 24)).astype(np.float32)


def zarr_values(path):
    return zarr.open_array(f"{path}/toy/test/depth", mode="r")[:]


def reader_of(path):
    cache = TeacherCache.open(path)
    return FrameReader.for_array(cache._depth, done=cache.done)


LAYOUTS = {
    1: Layout("delta", checksummed=False),
    2: Layout("delta", checksummed=True),
    3: Layout("predict_2d", checksummed=True),
    4: Layout("predict_2d", checksummed=True, offset=128, shuffled=True),
}


@pytest.mark.parametrize("store_format", READABLE_FORMATS)
def test_every_frame_equals_zarr_including_unwritten_frames_and_shards(tmp_path, store_format):
    path = tmp_path / "s.zarr"
    # Shard 0 partly written, shard 1 untouched (no file), shard 2 complete (frames 8, 9).
    create(path, store_format=store_format).write([0, 2, 3, 8, 9], random_depth(5), np.zeros(5, np.int32))
    reader = reader_of(path)
    assert inner_layout(TeacherCache.open(path)._depth) == LAYOUTS[store_format]
    expected = zarr_values(path)
    assert expected.max() > 65000 and np.count_nonzero(expected[[0, 2, 3, 8, 9]] == 0) == 0
    for i in range(len(IDS)):
        assert np.array_equal(reader.values(i), expected[i]), i
        assert np.array_equal(reader.values(i - len(IDS)), expected[i]), i
        scaled = reader.scaled(i, 1 / 256)
        assert scaled.dtype == np.float32 and np.array_equal(scaled, expected[i] / 256), i
    assert not expected[[1, 4, 5, 6, 7]].any()


def test_teacher_cache_reads_through_the_direct_reader_with_zarrs_answer(tmp_path):
    path = tmp_path / "s.zarr"
    create(path).write(list(range(10)), random_depth(10, seed=1), np.zeros(10, np.int32))
    cache = TeacherCache.open(path)
    assert cache._reader is not None
    expected = zarr_values(path).astype(np.float32) / 256
    for i in range(10):
        assert np.array_equal(cache.depth(i), expected[i])


def test_out_of_range_frame_is_an_index_error(tmp_path):
    create(tmp_path / "s.zarr")
    reader = reader_of(tmp_path / "s.zarr")
    for i in (10, -11):
        with pytest.raises(IndexError):
            reader.values(i)


def test_an_open_reader_sees_frames_written_after_it_opened(tmp_path):
    path = tmp_path / "s.zarr"
    writer = create(path)
    writer.write([0, 1], random_depth(2), np.zeros(2, np.int32))
    reader = reader_of(path)
    assert not reader.values(2).any()
    writer.write([2, 3], random_depth(2, seed=5), np.zeros(2, np.int32))
    assert np.array_equal(reader.values(2), zarr_values(path)[2])


def test_settled_shard_index_is_read_once(tmp_path):
    path = tmp_path / "s.zarr"
    create(path).write(list(range(10)), random_depth(10), np.zeros(10, np.int32))
    reader = reader_of(path)
    reader.values(5)
    reader.values(6)
    assert list(reader._indices) == [1]


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda raw: raw[:20], "shorter than the shard's index"),
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "index fails its CRC32C"),
        (lambda raw: bytes(64) + raw[64:], "bytes fail their CRC32C"),
    ],
)
def test_a_corrupt_shard_is_a_store_error_naming_the_file(tmp_path, damage, why):
    path = tmp_path / "s.zarr"
    create(path).write(list(range(4)), random_depth(4), np.zeros(4, np.int32))
    shard = path / "toy/test/depth/c/0/0/0"
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.raises(StoreError, match=why) as raised:
        reader_of(path).values(0)
    assert str(shard) in raised.value.message


def test_other_layouts_and_stores_are_left_to_zarr(tmp_path):
    path = tmp_path / "s.zarr"
    create(path)
    assert is_tiekd_layout(zarr.open_array(f"{path}/toy/test/depth", mode="r"))
    plain = zarr.create_array(tmp_path / "plain.zarr", shape=(4, 16, 24), chunks=(1, 16, 24), dtype="uint16")
    assert not is_tiekd_layout(plain)
    no_delta = zarr.create_array(
        tmp_path / "nd.zarr", shape=(4, 16, 24), shards=(4, 16, 24), chunks=(1, 16, 24), dtype="uint16"
    )
    assert not is_tiekd_layout(no_delta)
    in_memory = CacheWriter.create_or_resume(
        "memory://frame-reader-test", teacher="toy", split="test", spec=WIDE, ids=IDS, extra_attrs={}
    )
    in_memory.write([0], random_depth(1), np.zeros(1, np.int32))
    cache = TeacherCache.open("memory://frame-reader-test")
    assert cache._reader is None
    assert np.array_equal(cache.depth(0), np.clip(np.rint(random_depth(1)[0] * 256), 1, None) / 256)
