"""Finding a frame's bytes in a tiekd store, for tests that damage exactly one frame; a crafted
decompression bomb, and the peak memory of a command that meets one."""

import contextlib
import subprocess
import time
from pathlib import Path

import google_crc32c
import imagecodecs
import numpy as np
import psutil
from numcodecs import Zstd

INDEX_ENTRY_BYTES = 16
"""One (offset, nbytes) pair of little-endian uint64 per frame (Zarr v3 sharding spec)."""
CHECKSUM_BYTES = 4


def frame_bytes(depth_dir, i: int, frames_per_shard: int) -> tuple[Path, int, int]:
    """(shard file, offset, nbytes) of frame ``i``'s stored bytes, from the shard's own index."""
    shard = Path(depth_dir) / f"c/{i // frames_per_shard}/0/0"
    raw = shard.read_bytes()
    size = frames_per_shard * INDEX_ENTRY_BYTES + CHECKSUM_BYTES
    index = np.frombuffer(raw[-size:-CHECKSUM_BYTES], "<u8").reshape(-1, 2)
    offset, nbytes = index[i % frames_per_shard]
    return shard, int(offset), int(nbytes)


def flip_bit(depth_dir, i: int, frames_per_shard: int, *, at: float = 0.5, bit: int = 4) -> None:
    """Flip one bit of frame ``i``'s stored bytes, at fraction ``at`` of them."""
    shard, offset, nbytes = frame_bytes(depth_dir, i, frames_per_shard)
    raw = bytearray(shard.read_bytes())
    raw[offset + min(int(nbytes * at), nbytes - 1)] ^= 1 << bit
    shard.write_bytes(bytes(raw))


EMPTY = 2**64 - 1
"""Index entry of a frame never written (Zarr v3 sharding)."""
BOUNDED_RSS = 1 << 30
"""A command that never inflates a crafted 1 GiB frame stays far below this (torch and zarr loaded:
about 0.5 GiB); inflating it costs more than 1 GiB on its own."""


def bomb(claimed: int = 1 << 30, *, codec: str = "zstd") -> bytes:
    """A valid zstd (about 40 kB for 1 GiB) or blosc (LZ4, 4.5 MB) frame of ``claimed`` zero bytes that
    says its size."""
    if codec == "blosc":
        return imagecodecs.blosc_encode(np.zeros(claimed, np.uint8), level=1, compressor="lz4", shuffle=0,
                                        typesize=1, numthreads=1)  # fmt: skip
    return Zstd(level=1).encode(np.zeros(claimed, np.uint8))


def decompression_bomb(shard, frames_per_shard: int, claimed: int = 1 << 30, *, codec: str = "zstd") -> None:
    """Replace frame 0 of the shard file ``shard`` (of a ``-> zstd -> crc32c`` or ``-> blosc -> crc32c``
    array, as ``codec`` says) by :func:`bomb` with a valid CRC32C, and rewrite the shard's index and its
    CRC32C to match."""
    shard = Path(shard)
    raw = shard.read_bytes()
    size = frames_per_shard * INDEX_ENTRY_BYTES + CHECKSUM_BYTES
    index = np.frombuffer(raw[-size:-CHECKSUM_BYTES], "<u8").reshape(-1, 2).copy()
    written = [i for i, (offset, _) in enumerate(index) if offset != EMPTY]
    frames = {i: raw[int(index[i, 0]) : int(index[i, 0] + index[i, 1])] for i in written}
    payload = bomb(claimed, codec=codec)
    frames[0] = payload + google_crc32c.value(payload).to_bytes(CHECKSUM_BYTES, "little")
    offset = 0
    for i in written:
        index[i] = offset, len(frames[i])
        offset += len(frames[i])
    table = index.astype("<u8").tobytes()
    body = b"".join(frames[i] for i in written)
    shard.write_bytes(body + table + google_crc32c.value(table).to_bytes(CHECKSUM_BYTES, "little"))


def peak_rss(command, env) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``command``; its result and the largest resident size seen, polled every 20 ms. (Not the
    kernel's ``ru_maxrss``: that counts the forking test process's own size before the exec.)"""
    process = psutil.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, process.memory_info().rss)
        time.sleep(0.02)
    return subprocess.CompletedProcess(command, process.returncode, process.stdout.read()), peak
