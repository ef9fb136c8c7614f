"""Stage one against the authors' format and against the bare teacher, side by side in one run.

    python bench/bench_cache.py [--frames 64] [--teacher-encoder efficientnet_b5] [--teacher-frames 4]

1. Bytes per frame: the tiekd store against one 16-bit PNG per frame holding floor(d / 80 * 65535)
   (the authors' teacher files), for the same maps.
2. Reading one frame's map (random order, float32 metres): the store against decoding its PNG;
   also the same store read through zarr-python, the path for stores that are not local.
3. ``cache-teacher`` wall time against the bare teacher forward (with the same flip TTA) over
   the same frames: the overhead of loading, cropping, TTA bookkeeping, quantising and writing.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image

from tiekd.data.kitti import kb_crop, read_depth_png, read_rgb, read_split
from tiekd.data.sample import write_sample_dataset
from tiekd.pipeline.cache import CacheSpec, TeacherCache, dequantise
from tiekd.pipeline.cache_writer import CacheWriter
from tiekd.pipeline.teachers import load_teacher, predict_depth
from tiekd.stages.cache_teacher import CacheTeacherConfig, run

AUTHORS_SCALE = 65535 / 80.0
"""The authors' PNGs hold floor(d / 80 * 65535)."""


def authors_png(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.floor(depth * AUTHORS_SCALE).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def teacher_like_maps(sample, n: int) -> np.ndarray:
    """Dense sample depth at the KB crop with the sky (no surface) set to 80 m, as a teacher predicts it."""
    maps = []
    for record in read_split(sample.train_split)[:n]:
        dense = kb_crop(read_depth_png(sample.dense_gt_root / record.gt))
        maps.append(np.where(dense > 0, dense, 80.0).astype(np.float32))
    return np.stack(maps)


def store_bytes_and_reads(maps: np.ndarray, folder: Path) -> tuple[float, dict[str, float]]:
    """(bytes per frame in the store, seconds per read: tiekd's reader, zarr-python, PNG decode)."""
    ids = [f"frame{i}.png" for i in range(len(maps))]
    spec = CacheSpec("bench", None, "0", maps.shape[1:], None, True, 1e-3, 80.0)
    writer = CacheWriter.create_or_resume(
        str(folder / "s.zarr"), teacher="t", split="s", spec=spec, ids=ids, extra_attrs={}
    )
    writer.write(list(range(len(maps))), maps, np.zeros(len(maps), np.int32))
    depth_files = [p for p in (folder / "s.zarr/t/s/depth").rglob("*") if p.is_file()]
    store_bytes = sum(p.stat().st_size for p in depth_files) / len(maps)
    pngs = []
    for i, depth in enumerate(maps):
        (folder / f"{i}.png").write_bytes(authors_png(depth))
        pngs.append(folder / f"{i}.png")
    cache = TeacherCache.open(folder / "s.zarr")
    through_zarr = zarr.open_array(str(folder / "s.zarr/t/s/depth"), mode="r")
    order = np.random.default_rng(0).permutation(len(maps)).tolist()
    readers = {
        "store": lambda i: cache.depth(i),
        "zarr": lambda i: dequantise(through_zarr[i]),
        "png": lambda i: np.asarray(Image.open(pngs[i]), np.float32) / AUTHORS_SCALE,
    }
    return store_bytes, per_read(readers, order)


def per_read(readers: dict, order: list[int], rounds: int = 7) -> dict[str, float]:
    """Median over interleaved rounds of the seconds one read takes, each round a pass over
    ``order`` per reader (the first round warms up and is dropped). Each map is dropped after its
    read, as a data loader drops it after batching: keeping them all would time page faults."""

    def one_pass(read) -> None:
        for i in order:
            read(i)

    times = {name: [] for name in readers}
    for _ in range(rounds + 1):
        for name, read in readers.items():
            times[name].append(timed(lambda: one_pass(read)) / len(order))
    return {name: float(np.median(t[1:])) for name, t in times.items()}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def overhead(sample, encoder: str, n_frames: int, folder: Path) -> tuple[float, float]:
    """(cache-teacher seconds, bare forward seconds) over the first n_frames test frames."""
    split = folder / "split.txt"
    split.write_text("".join(f"{r.rgb} None {r.focal}\n" for r in read_split(sample.train_split)[:n_frames]))
    spec = "python:tiekd.pipeline.students:build_student"
    args = {"encoder": encoder, "head": "regression"}
    teacher = load_teacher(spec, args=args)
    images = [
        torch.from_numpy(kb_crop(read_rgb(sample.data_root / r.rgb)).copy()).permute(2, 0, 1)[None]
        for r in read_split(split)
    ]
    predict_depth(teacher.module, images[0].float() / 255)  # warm-up
    bare = timed(lambda: [predict_depth(teacher.module, x.float() / 255) for x in images])
    cfg = CacheTeacherConfig(
        teacher=spec,
        teacher_args=args,
        data_root=sample.data_root,
        split=split,
        out=str(folder / "t.zarr"),
        batch_size=1,
        workers=1,
    )
    full = timed(lambda: run(cfg))
    return full, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--teacher-encoder", default="efficientnet_b5")
    parser.add_argument("--teacher-frames", type=int, default=4)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample = write_sample_dataset(folder / "sample", n_train=args.frames, n_test=2, seed=0)
        maps = teacher_like_maps(sample, args.frames)
        store_bytes, reads = store_bytes_and_reads(maps, folder)
        png_bytes = np.mean([len(authors_png(m)) for m in maps])
        full, bare = overhead(sample, args.teacher_encoder, args.teacher_frames, folder)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{args.frames} frames of {maps.shape[1]}x{maps.shape[2]}"
    )
    print("| measure | tiekd | authors' PNG / bare teacher | ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| bytes per frame | {store_bytes / 1e3:.1f} kB | {png_bytes / 1e3:.1f} kB | {store_bytes / png_bytes:.2f}x | <= 0.8x |"
    )
    store, png = reads["store"], reads["png"]
    print(f"| read one map | {store * 1e3:.2f} ms | {png * 1e3:.2f} ms | {png / store:.1f}x faster | >= 3x |")
    print(
        f"| read one map through zarr-python (fsspec stores) | {reads['zarr'] * 1e3:.2f} ms | {png * 1e3:.2f} ms "
        f"| {png / reads['zarr']:.1f}x faster | |"
    )
    print(
        f"| cache-teacher vs bare forward ({args.teacher_encoder}, {args.teacher_frames} frames, flip TTA) "
        f"| {full:.1f} s | {bare:.1f} s | {full / bare:.3f}x | <= 1.10x |"
    )


if __name__ == "__main__":
    main()
