"""``tiekd.predict_2d``: a 2-D prediction filter for depth maps, as a registered Zarr v3 codec.

Each value is replaced by its difference from the planar prediction ``left + up - upper_left``
(the LOCO-I / JPEG-LS "plane" predictor without its edge cases) plus ``offset``, modulo 2**bits,
with 0 outside the frame. A network's depth map is locally close to a plane, so most residuals are
0 or tiny. With ``offset`` 128 a small residual of either sign has a zero high byte; store format 4
then groups each frame's low bytes before its high bytes (numcodecs' shuffle), and zstd packs them
into 0.32x the authors' PNG bytes (0.39x without the offset and shuffle, format 3; 0.53x for the
row delta of formats 1 and 2; ``bench/bench_cache.py``).

Decoding is two prefix sums (the residual is ``D_y(D_x(v))``, the row difference of the column
difference), done in one pass by a numba kernel that also joins the byte planes, so a frame is
read in one sweep over its bytes. The kernel compiles on its first call in each process (under a
second); it is not cached on disk, so an installed tiekd never writes into its own folder (numba
refuses to import a cached function where it finds no writable cache folder).

The codec is registered with zarr-python when this module is imported (``tiekd.pipeline.store.cache``
does) and through the ``zarr.codecs`` entry point in setup.cfg, so any zarr-python with tiekd
installed reads a tiekd store without importing tiekd.

Importing this module also makes :class:`BoundedZstd` zarr-python's ``zstd`` codec in this process: every
zstd frame zarr decodes for tiekd is decoded into at most the bytes its chunk holds, so a crafted frame that
claims a gibibyte is refused before a byte of it is inflated, on every read path (remote stores without the
shard cache, shards still being written, packed inputs). ``FrameReader`` bounds its own reads the same way.
:class:`BoundedBlosc` does the same for ``blosc`` (the packed images' codec), and decodes in one thread: blosc's
own default spreads one frame over every core, which a DataLoader worker (one core each) must not do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import imagecodecs
import numba
import numpy as np
import zarr
from zarr.abc.codec import ArrayArrayCodec
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.common import parse_named_configuration
from zarr.core.dtype.common import HasItemSize
from zarr.registry import register_codec

CODEC_NAME = "tiekd.predict_2d"
"""The codec's name in array metadata (namespaced: it is not part of the Zarr v3 spec)."""


def predict_2d_encode(values: np.ndarray, offset: int = 0) -> np.ndarray:
    """(..., H, W) uint16 -> residuals + ``offset`` of the same shape and dtype (a new array)."""
    residuals = imagecodecs.delta_encode(imagecodecs.delta_encode(values, axis=-1), axis=-2)
    residuals += np.uint16(offset)
    return residuals


def predict_2d_decode(residuals: np.ndarray, offset: int = 0) -> np.ndarray:
    """Inverse of :func:`predict_2d_encode`: (..., H, W) uint16 residuals -> a new array of values."""
    little = np.ascontiguousarray(residuals, dtype="<u2").view(np.uint8).reshape(*residuals.shape, 2)
    values = np.empty(residuals.shape, np.uint16)
    for frame, frame_bytes in zip(values.reshape(-1, *values.shape[-2:]), little.reshape(-1, *little.shape[-3:])):
        undo_prediction(frame_bytes[..., 0], frame_bytes[..., 1], offset, np.uint16(1), frame)
    return values


@numba.njit(nogil=True, cache=True)
def undo_prediction(low, high, offset, scale, out):
    """``out`` (H, W) = ``scale`` x the values whose residuals + ``offset`` have bytes ``low`` and
    ``high`` (each (H, W) uint8); ``out`` uint16 with ``scale`` 1, or float32 (metres in one pass).

    Row by row: join the bytes, a running sum along the row undoes the row difference, and adding the
    row above undoes the column difference (all modulo 2**16). One pass over the frame instead of two
    prefix sums and a float conversion after them (timings: README, Benchmarks; bench/bench_cache.py)."""
    height, width = out.shape
    column = np.zeros(width, np.uint16)
    row = np.empty(width, np.uint16)
    for y in range(height):
        for x in range(width):
            row[x] = (np.uint16(high[y, x]) << 8 | low[y, x]) - offset
        for x in range(1, width):
            row[x] += row[x - 1]
        for x in range(width):
            column[x] += row[x]
            out[y, x] = column[x] * scale


@dataclass(frozen=True)
class Predict2D(ArrayArrayCodec):
    """Zarr v3 array -> array codec applying :func:`predict_2d_encode` to each uint16 chunk's last two
    axes. ``offset`` is written in the metadata only where it is not 0, so format 3 arrays (written
    before it existed) keep their exact metadata."""

    offset: int = 0
    is_fixed_size = True

    def __post_init__(self):
        if not 0 <= self.offset < 2**16:
            raise ValueError(f"{CODEC_NAME} offset must be in [0, 65535], not {self.offset}")

    @classmethod
    def from_dict(cls, data: dict) -> Predict2D:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))

    def to_dict(self) -> dict:
        if not self.offset:
            return {"name": CODEC_NAME}
        return {"name": CODEC_NAME, "configuration": {"offset": self.offset}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        native = np.dtype(dtype.to_native_dtype())
        if len(shape) < 2 or native != np.uint16:
            raise ValueError(f"{CODEC_NAME} needs uint16 in 2 or more dimensions, not {native} {shape}")

    def resolve_metadata(self, chunk_spec):
        return chunk_spec

    def _decode_sync(self, chunk_array, chunk_spec):
        values = predict_2d_decode(chunk_array.as_numpy_array(), self.offset)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(values)

    def _encode_sync(self, chunk_array, chunk_spec):
        values = np.ascontiguousarray(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(predict_2d_encode(values, self.offset))

    async def _decode_single(self, chunk_array, chunk_spec):
        return self._decode_sync(chunk_array, chunk_spec)

    async def _encode_single(self, chunk_array, chunk_spec):
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec) -> int:
        return input_byte_length


register_codec(CODEC_NAME, Predict2D)


MAX_TEXT_BYTES = 16 * 1024
"""Most bytes of one element of a text array (ids, source records; a Linux path is at most 4096): the bound
on a zstd-compressed text chunk, whose elements have no fixed size."""


def decoded_bound(chunk_spec) -> int:
    """The most bytes a chunk of ``chunk_spec`` (shape, data type) decodes to: its exact size for a
    fixed-size type; for text (zarr's ``vlen-utf8``: a count, then a length and the bytes of each
    element) MAX_TEXT_BYTES an element."""
    elements = math.prod(chunk_spec.shape)
    if isinstance(chunk_spec.dtype, HasItemSize):
        return elements * chunk_spec.dtype.item_size
    return 4 + elements * (4 + MAX_TEXT_BYTES)


class BoundedZstd(ZstdCodec):
    """zarr-python's ``zstd`` codec, decoding each frame into at most :func:`decoded_bound` bytes: a frame
    that claims more (or inflates to more without saying so) is a ValueError before it is inflated. Encodes,
    and names itself in metadata, exactly as ``ZstdCodec``."""

    def _decode_sync(self, chunk_bytes, chunk_spec):
        bound = decoded_bound(chunk_spec)
        try:
            decoded = imagecodecs.zstd_decode(chunk_bytes.as_numpy_array(), out=bound)
        except imagecodecs.ZstdError as e:
            raise ValueError(f"its zstd frame does not decode into the {bound} bytes its chunk holds ({e})") from None
        return chunk_spec.prototype.buffer.from_bytes(decoded)


BLOSC_HEADER_BYTES = 16
"""A blosc frame's header: version, versionlz, flags, typesize, then nbytes (uint32 LE), blocksize, cbytes."""


def blosc_size(data) -> int:
    """The bytes a blosc frame says it decodes to (ValueError for a frame shorter than its header)."""
    header = bytes(memoryview(data)[:BLOSC_HEADER_BYTES])
    if len(header) < BLOSC_HEADER_BYTES:
        raise ValueError("its blosc frame is shorter than a blosc header")
    return int.from_bytes(header[4:8], "little")


def blosc_decoded(data, out: np.ndarray | int) -> np.ndarray:
    """A blosc frame decoded, in one thread, into ``out`` (uint8, which it must fill exactly) or into a new
    array of at most ``out`` bytes; ValueError before inflating a frame that claims another size."""
    claimed, room = blosc_size(data), out if isinstance(out, int) else out.nbytes
    if claimed > room or (not isinstance(out, int) and claimed != room):
        raise ValueError(f"its blosc frame does not decode into the {room} bytes its chunk holds (it claims {claimed})")
    try:
        return imagecodecs.blosc_decode(data, numthreads=1, out=claimed if isinstance(out, int) else out)
    except imagecodecs.BloscError as e:
        raise ValueError(f"its blosc frame does not decode ({e})") from None


class BoundedBlosc(BloscCodec):
    """zarr-python's ``blosc`` codec, decoding each frame in one thread into at most :func:`decoded_bound`
    bytes. Encodes, and names itself in metadata, exactly as ``BloscCodec``."""

    def _decode_sync(self, chunk_bytes, chunk_spec):
        decoded = blosc_decoded(chunk_bytes.as_numpy_array(), decoded_bound(chunk_spec))
        return chunk_spec.prototype.buffer.from_bytes(decoded)


register_codec("zstd", BoundedZstd)
register_codec("blosc", BoundedBlosc)
zarr.config.set({f"codecs.{name}": f"{codec.__module__}.{codec.__qualname__}"
                 for name, codec in (("zstd", BoundedZstd), ("blosc", BoundedBlosc))})  # fmt: skip
