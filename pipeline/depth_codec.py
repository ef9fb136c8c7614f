"""``tiekd.predict_2d``: a 2-D prediction filter for depth maps, as a registered Zarr v3 codec.

Each value is replaced by its difference from the planar prediction ``left + up - upper_left``
(the LOCO-I / JPEG-LS "plane" predictor without its edge cases), modulo 2**bits, with 0 outside
the frame. A network's depth map is locally close to a plane, so most residuals are 0 or tiny: zstd
packs them into 0.39x the authors' PNG bytes against 0.53x for the row delta of store formats 1
and 2 (``bench/bench_cache.py``; on maps with hard steps the row delta stays tighter). The residual is exactly ``D_y(D_x(v))``, the row difference of
the column difference, so decoding is two prefix sums, each a C loop of imagecodecs.

The codec is registered with zarr-python when this module is imported (``tiekd.pipeline.cache``
does) and through the ``zarr.codecs`` entry point in setup.cfg, so any zarr-python with tiekd
installed reads a tiekd store without importing tiekd.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayArrayCodec
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

CODEC_NAME = "tiekd.predict_2d"
"""The codec's name in array metadata (namespaced: it is not part of the Zarr v3 spec)."""
ROW_BLOCK = 16
"""Rows per block of the column prefix sum: 15 row additions on all blocks at once, then one
carry per block, instead of one addition per row (1.7x faster than imagecodecs' column loop on a
352x1216 frame; bench/bench_cache.py measures the whole read)."""


def predict_2d_encode(values: np.ndarray) -> np.ndarray:
    """(..., H, W) unsigned integers -> residuals of the same shape and dtype (a new array)."""
    return imagecodecs.delta_encode(imagecodecs.delta_encode(values, axis=-1), axis=-2)


def predict_2d_decode(residuals: np.ndarray) -> np.ndarray:
    """Inverse of :func:`predict_2d_encode`, in place: ``residuals`` must be C-contiguous and writable."""
    imagecodecs.delta_decode(residuals, axis=-1, out=residuals)
    for frame in residuals.reshape(-1, *residuals.shape[-2:]):
        _column_prefix_sum(frame)
    return residuals


def _column_prefix_sum(frame: np.ndarray) -> None:
    """frame[y] += frame[y - 1] for every row in turn (wrapping like the dtype), in place; (H, W)."""
    blocks, height = frame.shape[0] // ROW_BLOCK, frame.shape[0]
    body = frame[: blocks * ROW_BLOCK].reshape(blocks, ROW_BLOCK, frame.shape[1])
    for row in range(1, ROW_BLOCK):  # prefix sums inside every block at once
        np.add(body[:, row], body[:, row - 1], out=body[:, row])
    for y in range(blocks * ROW_BLOCK + 1, height):  # inside the rows after the last whole block
        np.add(frame[y], frame[y - 1], out=frame[y])
    if blocks:
        carry = np.cumsum(body[:, -1], axis=0, dtype=frame.dtype)  # totals of blocks 0..k
        body[1:] += carry[:-1, None, :]
        frame[blocks * ROW_BLOCK :] += carry[-1]


@dataclass(frozen=True)
class Predict2D(ArrayArrayCodec):
    """Zarr v3 array -> array codec applying :func:`predict_2d_encode` to each chunk's last two axes."""

    is_fixed_size = True

    @classmethod
    def from_dict(cls, data: dict) -> Predict2D:
        parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls()

    def to_dict(self) -> dict:
        return {"name": CODEC_NAME}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        native = np.dtype(dtype.to_native_dtype())
        if len(shape) < 2 or native.kind != "u":
            raise ValueError(f"{CODEC_NAME} needs unsigned integers in 2 or more dimensions, not {native} {shape}")

    def resolve_metadata(self, chunk_spec):
        return chunk_spec

    def _decode_sync(self, chunk_array, chunk_spec):
        residuals = np.array(chunk_array.as_numpy_array(), copy=True, order="C")
        return chunk_spec.prototype.nd_buffer.from_numpy_array(predict_2d_decode(residuals))

    def _encode_sync(self, chunk_array, chunk_spec):
        values = np.ascontiguousarray(chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(predict_2d_encode(values))

    async def _decode_single(self, chunk_array, chunk_spec):
        return self._decode_sync(chunk_array, chunk_spec)

    async def _encode_single(self, chunk_array, chunk_spec):
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec) -> int:
        return input_byte_length


register_codec(CODEC_NAME, Predict2D)
