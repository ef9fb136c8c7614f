"""Listing ``cache-teacher --images`` sources: in this process against spread over a dask cluster.

    python bench/bench_listing.py [--videos 4] [--frames 120] [--size 720x1280] [--workers 2]

Stage one decodes every frame of its image sources once to record its size and content hash. With
``--cluster`` the parts of that listing (each video alone, up to 256 images together) are tasks on
the workers. This writes ``--videos`` H.264 test videos with PyAV and lists them with
:func:`~tiekd.data.sources.listing.list_sources` three ways, checking that the listings are equal:
in this process, on tiekd's ``--cluster local:N`` (glibc's own malloc settings in its workers) and
on a LocalCluster with dask's default worker environment (MALLOC_TRIM_THRESHOLD_=65536). It prints
each time and the ratios. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_video import write
from distributed import Client, LocalCluster

from tiekd.data.sources.listing import list_sources
from tiekd.stages.caching.cluster import cluster_client, environment_kept, gathered_map


def timed_on(client: Client, folder: str) -> tuple[list, float]:
    """The listing on ``client``'s workers (warmed first: imports), and its seconds."""
    list_sources([folder], map=gathered_map(client))
    start = time.perf_counter()
    frames = list_sources([folder], map=gathered_map(client))
    return frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="720x1280")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.videos):
            write(Path(folder) / f"{i}.mp4", "libx264", args.frames, size)
        start = time.perf_counter()
        here = list_sources([folder])
        here_s = time.perf_counter() - start
        with cluster_client(f"local:{args.workers}") as client:
            ours, ours_s = timed_on(client, folder)
        with environment_kept(), LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as c:
            with Client(c) as client:
                theirs, theirs_s = timed_on(client, folder)
    assert ours == here and theirs == here, "a cluster's listing differs from this process's"
    print(f"{args.videos} videos x {args.frames} frames {args.size} ({len(here)} frames): this process "
          f"{here_s:.2f} s; --cluster local:{args.workers} {ours_s:.2f} s ({here_s / ours_s:.2f}x); "
          f"dask's default worker environment {theirs_s:.2f} s ({here_s / theirs_s:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
