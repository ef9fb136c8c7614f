"""Finding a frame's bytes in a tiekd store, for tests that damage exactly one frame."""

from pathlib import Path

import numpy as np

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
