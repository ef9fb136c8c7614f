"""Single-frame reads from a local tiekd store without zarr-python's per-call machinery.

zarr-python 3 sends every read through its event-loop thread and codec pipeline, a fixed cost per
call before a byte is decoded, larger on a sharded array. A training loader reads one frame at a
time, 23,158 times an epoch; through zarr-python such a read took as long as decoding the authors'
PNG (figures: README, Benchmarks; ``bench/bench_cache.py``).

The depth array tiekd writes has one fixed, spec-defined layout (Zarr v3 ``sharding_indexed``
with the index at the end of each shard file and a CRC32C over it; inner chunk = one frame,
``FILTER -> bytes (little) [-> shuffle] -> zstd [-> crc32c]``, FILTER ``tiekd.predict_2d`` or
``numcodecs.delta <u2``, see ``formats.py``), so ``FrameReader`` reads the index and the
frame's bytes with plain file reads, checks the frame's CRC32C where it has one, and decodes them
itself: the plane prediction with ``codec.undo_prediction`` (one numba pass that also joins
the byte planes), the row delta with imagecodecs' C loop (NumPy's cumsum, which numcodecs uses,
takes 6x as long on uint16). Any other store (an fsspec URL, another codec chain) is read through
zarr; ``FrameReader.for_array`` returns None. tests/pipeline/store/test_reader.py checks the two
readers give identical frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import google_crc32c
import imagecodecs
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ShardingCodecIndexLocation, ZstdCodec
from zarr.codecs.numcodecs import Delta, Shuffle
from zarr.storage import LocalStore

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.codec import Predict2D, undo_prediction
from tiekd.pipeline.store.formats import damaged_frame

EMPTY = 2**64 - 1
"""Offset and length of an inner chunk that was never written (Zarr v3 sharding spec)."""
CHECKSUM_BYTES = 4
INDEX_ENTRY_BYTES = 16
"""One (offset, nbytes) pair of little-endian uint64 per inner chunk."""


class Layout(NamedTuple):
    """How a frame's bytes are decoded (see :func:`inner_layout`)."""

    filter: str
    """'predict_2d' (formats 3, 4) or 'delta' (formats 1, 2)."""
    checksummed: bool
    offset: int = 0
    """predict_2d's offset (format 4: 128)."""
    shuffled: bool = False
    """The frame's low bytes come before its high bytes (format 4)."""


def _little(codec) -> bool:
    return isinstance(codec, BytesCodec) and codec.endian is not None and codec.endian.value == "little"


def _is_shuffle(codec) -> bool:
    return isinstance(codec, Shuffle) and codec.codec_config.get("elementsize") == 2


def inner_layout(array: zarr.Array) -> Layout | None:
    """The layout of a depth array in shards of whole frames encoded as tiekd writes it: (N, H, W)
    uint16, one inner chunk per frame, ``FILTER -> bytes (little) [-> shuffle] -> zstd [-> crc32c]``;
    None for any other array."""
    meta = array.metadata
    if meta.zarr_format != 3 or array.dtype != np.uint16 or len(meta.codecs) != 1 or array.fill_value != 0:
        return None
    sharding = meta.codecs[0]
    if not isinstance(sharding, ShardingCodec) or array.ndim != 3 or len(sharding.codecs) < 3:
        return None
    first, serializer, *compressors = sharding.codecs
    shuffled = _is_shuffle(compressors[0])
    compressors = compressors[shuffled:]
    checksummed = len(compressors) == 2 and isinstance(compressors[1], Crc32cCodec)
    fits = (
        tuple(sharding.chunk_shape) == (1, *array.shape[1:])
        and tuple(array.shards[1:]) == tuple(array.shape[1:])
        and sharding.index_location == ShardingCodecIndexLocation.end
        and len(sharding.index_codecs) == 2
        and _little(sharding.index_codecs[0])
        and isinstance(sharding.index_codecs[1], Crc32cCodec)
        and _little(serializer)
        and len(compressors) == 1 + checksummed
        and isinstance(compressors[0], ZstdCodec)
    )
    if fits and isinstance(first, Predict2D):
        return Layout("predict_2d", checksummed, first.offset, shuffled)
    if fits and not shuffled and isinstance(first, Delta) and first.codec_config.get("dtype") == "<u2":
        return Layout("delta", checksummed)
    return None


def is_tiekd_layout(array: zarr.Array) -> bool:
    """Whether ``FrameReader`` can read ``array`` (see :func:`inner_layout`)."""
    return inner_layout(array) is not None


class FrameReader:
    """Reads frame i of a local tiekd depth array: its stored uint16 values (H, W)."""

    reads = staticmethod(is_tiekd_layout)
    """Whether an array has the layout this class reads (a subclass reads another)."""

    def __init__(self, array: zarr.Array, *, shard_path, settled: np.ndarray, location: str):
        self.frames, *self.shape = array.shape
        self.frames_per_shard = int(array.shards[0])
        self._shard_path = shard_path
        self._settled = settled
        """(n_shards,) bool: every frame of the shard was done when the reader was made, so the
        shard is never written again and its index can be kept."""
        self._layout = inner_layout(array)
        self._location = location
        self._indices: dict[int, np.ndarray] = {}
        self._zstd = Zstd()

    @classmethod
    def for_array(cls, array: zarr.Array, *, done: np.ndarray, location: str | None = None) -> FrameReader | None:
        """A reader for ``array``, or None where zarr must read it (not local, not tiekd's layout).

        ``location`` (``STORE/teacher/split``) names the cache in messages; default the array's parent.
        """
        store = array.store
        if not isinstance(store, LocalStore) or not cls.reads(array):
            return None
        root = Path(store.root) / array.path
        n_shards = -(-array.shape[0] // array.shards[0])
        padded = np.zeros(n_shards * array.shards[0], bool)
        padded[: len(done)] = done
        padded[len(done) :] = True  # frames past the end belong to no one and are never written

        def shard_path(shard: int) -> Path:
            return root / array.metadata.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))

        settled = padded.reshape(n_shards, -1).all(axis=1)
        return cls(array, shard_path=shard_path, settled=settled, location=location or str(root.parent))

    def values(self, i: int, *, stored: bool = False) -> np.ndarray:
        """Stored values of frame ``i`` (negative counts from the end), uint16 (H, W); 0 = never written.

        ``stored``: the frame is marked done, so missing bytes are damage (a ``StoreError``), not zeros.
        """
        return self._decoded(i, np.uint16(1), stored=stored)

    def scaled(self, i: int, scale: float, *, stored: bool = False) -> np.ndarray:
        """``values(i)`` x ``scale`` as float32 (H, W), converted in the decoding pass where the
        format allows (formats 3 and 4), which saves a pass over the frame."""
        return self._decoded(i, np.float32(scale), stored=stored)

    def _decoded(self, i: int, scale: np.uint16 | np.float32, *, stored: bool) -> np.ndarray:
        """Frame ``i`` x ``scale``, in ``scale``'s dtype."""
        if not -self.frames <= i < self.frames:
            raise IndexError(f"frame {i} is out of range for {self.frames} frames")
        i %= self.frames
        encoded = self._encoded(i)
        if encoded is None:
            if stored:
                raise self._damaged(i, "it is marked done but its bytes are missing")
            return np.zeros(self.shape, scale.dtype)
        if self._layout.checksummed:
            encoded = self._checked(i, encoded)
        stored_bytes = np.empty(2 * self.shape[0] * self.shape[1], np.uint8)
        try:
            self._zstd.decode(encoded, out=stored_bytes)
        except (RuntimeError, ValueError) as e:
            raise self._damaged(i, f"it does not decode: {e}") from e
        return self._unfiltered(stored_bytes, scale)

    def _unfiltered(self, stored_bytes: np.ndarray, scale: np.uint16 | np.float32) -> np.ndarray:
        """The frame x ``scale`` from its decompressed bytes (2 per value, little-endian)."""
        if self._layout.filter == "delta":
            values = stored_bytes.view("<u2")
            imagecodecs.delta_decode(values, out=values)  # x[0], x[1] - x[0], ... flattened
            return np.multiply(values.reshape(self.shape), scale, dtype=scale.dtype)
        if self._layout.shuffled:
            low, high = stored_bytes.reshape(2, *self.shape)
        else:
            low, high = np.moveaxis(stored_bytes.reshape(*self.shape, 2), -1, 0)
        out = np.empty(self.shape, scale.dtype)
        undo_prediction(low, high, self._layout.offset, scale, out)
        return out

    def _encoded(self, i: int) -> bytes | None:
        """The frame's stored bytes, None where it was never written."""
        shard, inner = divmod(i, self.frames_per_shard)
        try:
            with open(self._shard_path(shard), "rb") as f:
                offset, nbytes = self._index(shard, i, f)[inner]
                if offset == EMPTY:
                    return None
                f.seek(int(offset))
                encoded = f.read(int(nbytes))
        except FileNotFoundError:
            return None
        if len(encoded) != nbytes:
            raise self._damaged(i, "the shard file is shorter than its index says")
        return encoded

    def _checked(self, i: int, encoded: bytes) -> bytes:
        """The frame's bytes without their CRC32C, which must match."""
        payload, checksum = encoded[:-CHECKSUM_BYTES], encoded[-CHECKSUM_BYTES:]
        if len(checksum) < CHECKSUM_BYTES or google_crc32c.value(payload) != int.from_bytes(checksum, "little"):
            raise self._damaged(i, "its bytes fail their CRC32C check")
        return payload

    def _index(self, shard: int, i: int, f) -> np.ndarray:
        """(frames_per_shard, 2) uint64 (offset, nbytes) of the shard's frames, checksum verified."""
        if shard in self._indices:
            return self._indices[shard]
        size = self.frames_per_shard * INDEX_ENTRY_BYTES + CHECKSUM_BYTES
        if os.fstat(f.fileno()).st_size < size:
            raise self._damaged(i, "its shard file is shorter than the shard's index")
        f.seek(-size, os.SEEK_END)
        raw = f.read(size)
        if google_crc32c.value(raw[:-CHECKSUM_BYTES]) != int.from_bytes(raw[-CHECKSUM_BYTES:], "little"):
            raise self._damaged(i, "its shard's index fails its CRC32C check")
        index = np.frombuffer(raw[:-CHECKSUM_BYTES], "<u8").reshape(-1, 2)
        if self._settled[shard]:
            self._indices[shard] = index
        return index

    def _damaged(self, i: int, why: str) -> StoreError:
        return damaged_frame(self._location, i, str(self._shard_path(i // self.frames_per_shard)), why)
