"""Stage one against the authors' format and against the bare teacher, side by side in one run.

    python bench/bench_cache.py [--frames 32] [--network-steps 40] [--teacher-frames 4]

1. Bytes per frame of the same maps in each store format (format 4: 2-D predictor with byte
   planes, format 3: 2-D predictor, format 2: row delta) against one 16-bit PNG per frame holding floor(d / 80 * 65535) (the authors' teacher
   files): on real network output (a teacher trained and cached as ``tiekd demo`` does) and on
   teacher-like maps made from the sample's dense GT.
2. Reading one frame's map (random order, float32 metres) from each against decoding its PNG;
   also format 4 through zarr-python, the path for stores that are not local.
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

from tiekd.data.images import read_rgb
from tiekd.data.kitti import KB_HEIGHT, KB_WIDTH, kb_crop, read_depth, read_split
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.store.cache import CacheSpec, TeacherCache, dequantise
from tiekd.pipeline.store.writer import CacheWriter
from tiekd.pipeline.teachers.load import load_teacher, predict_depth
from tiekd.stages.cache_teacher import CacheTeacherConfig, run
from tiekd.stages.train_student import run as train_run
from tiekd.stages.training.config import TrainStudentConfig

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
        dense = kb_crop(read_depth(sample.dense_gt_root / record.gt))
        maps.append(np.where(dense > 0, dense, 80.0).astype(np.float32))
    return np.stack(maps)


def network_maps(sample, folder: Path, *, encoder: str, steps: int, scale: float) -> np.ndarray:
    """Real network output, made as ``tiekd demo`` makes its teacher's: ``encoder`` trained for
    ``steps`` on the sample's dense GT at ``scale`` of the crop, then cached over the training frames
    at that input size (bilinear back to the crop, as --teacher-input does). (N, 352, 1216) metres."""
    run_dir = folder / "teacher"
    train_run(TrainStudentConfig(
        data_root=sample.data_root, gt_root=sample.dense_gt_root, split=sample.train_split, out=run_dir,
        student=encoder, method="supervised", max_steps=steps, epochs=10_000, scale=scale, batch_size=4,
        pretrained=False, save_every=10_000, workers=0,
    ))
    store = folder / "teacher.zarr"
    run(CacheTeacherConfig(
        teacher=f"checkpoint:{run_dir / 'last.pt'}", data_root=sample.data_root, split=sample.train_split,
        out=str(store), name="teacher", teacher_input=(round(KB_HEIGHT * scale), round(KB_WIDTH * scale)),
        batch_size=4, workers=0,
    ))
    cache = TeacherCache.open(store)
    return np.stack([cache.depth(i) for i in range(len(cache))])


def store_of(maps: np.ndarray, path: Path, store_format: int) -> tuple[TeacherCache, float]:
    """(the maps written to a new store in ``store_format``, its depth bytes per frame)."""
    spec = CacheSpec("bench", None, "0", maps.shape[1:], None, True, 1e-3, 80.0)
    writer = CacheWriter.create_or_resume(
        str(path), teacher="t", split="s", spec=spec, ids=[f"frame{i}.png" for i in range(len(maps))],
        extra_attrs={}, store_format=store_format,
    )
    writer.write(list(range(len(maps))), maps, np.zeros(len(maps), np.int32))
    depth_files = [p for p in (path / "t/s/depth").rglob("*") if p.is_file()]
    return TeacherCache.open(path), sum(p.stat().st_size for p in depth_files) / len(maps)


FORMATS = {
    4: "tiekd format 4 (2-D predictor + byte planes + zstd + CRC32C)",
    3: "tiekd format 3 (2-D predictor + zstd + CRC32C)",
    2: "tiekd format 2 (row delta + zstd + CRC32C)",
}


def compare_formats(maps: np.ndarray, folder: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(bytes per frame, seconds per read) of the formats side by side: each store format (format
    4 also through zarr-python) and the PNGs."""
    sizes, readers = {}, {}
    for version in FORMATS:
        cache, sizes[f"format {version}"] = store_of(maps, folder / f"f{version}.zarr", version)
        readers[f"format {version}"] = cache.depth
    pngs = []
    for i, depth in enumerate(maps):
        (folder / f"{i}.png").write_bytes(authors_png(depth))
        pngs.append(folder / f"{i}.png")
    sizes["png"] = float(np.mean([p.stat().st_size for p in pngs]))
    through_zarr = zarr.open_array(str(folder / "f4.zarr/t/s/depth"), mode="r")
    readers["zarr"] = lambda i: dequantise(through_zarr[i])
    readers["png"] = lambda i: np.asarray(Image.open(pngs[i]), np.float32) / AUTHORS_SCALE
    order = np.random.default_rng(0).permutation(len(maps)).tolist()
    return sizes, per_read(readers, order)


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


def print_formats(title: str, sizes: dict[str, float], reads: dict[str, float]) -> None:
    """One table: bytes per frame and read time of each format against the authors' PNG."""
    png_bytes, png_read = sizes["png"], reads["png"]
    print(f"\n{title}")
    print("| format | bytes/frame | x PNG | read one map | PNG decode / read |")
    print("|---|---|---|---|---|")
    rows = [(label, f"format {version}", f"format {version}") for version, label in FORMATS.items()]
    rows += [("format 4 through zarr-python (fsspec stores)", "format 4", "zarr"),
             ("authors' 16-bit PNG of floor(d/80*65535)", "png", "png")]
    for label, size_key, read_key in rows:
        print(f"| {label} | {sizes[size_key] / 1e3:.1f} kB | {sizes[size_key] / png_bytes:.2f}x "
              f"| {reads[read_key] * 1e3:.2f} ms | {png_read / reads[read_key]:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--network-encoder", default="resnet34", help="The demo teacher's encoder.")
    parser.add_argument("--network-steps", type=int, default=40, help="Its training steps (the demo: 250).")
    parser.add_argument("--network-scale", type=float, default=0.125, help="Its resolution (the demo's).")
    parser.add_argument("--teacher-encoder", default="efficientnet_b5")
    parser.add_argument("--teacher-frames", type=int, default=4, help="0 skips the cache-teacher overhead.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample = write_sample_dataset(folder / "sample", n_train=args.frames, n_test=2, seed=0)
        network = network_maps(sample, folder, encoder=args.network_encoder, steps=args.network_steps,
                               scale=args.network_scale)
        torch.set_grad_enabled(False)
        (folder / "net").mkdir(), (folder / "gt").mkdir()
        real = compare_formats(network, folder / "net")
        synthetic = compare_formats(teacher_like_maps(sample, args.frames), folder / "gt")
        if args.teacher_frames:
            full, bare = overhead(sample, args.teacher_encoder, args.teacher_frames, folder)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{args.frames} frames of {network.shape[1]}x{network.shape[2]}; a read is the median of 7 "
        "interleaved passes in random order"
    )
    print_formats(f"real network output: {args.network_encoder} trained {args.network_steps} steps on the "
                  f"dense sample GT, run at {args.network_scale} of the crop (the demo teacher's recipe)", *real)
    print_formats("teacher-like maps: the sample's dense GT with the sky at 80 m", *synthetic)
    if args.teacher_frames:
        print(
            f"\ncache-teacher vs bare forward ({args.teacher_encoder}, {args.teacher_frames} frames, flip TTA): "
            f"{full:.1f} s vs {bare:.1f} s = {full / bare:.3f}x (target <= 1.10x)"
        )


if __name__ == "__main__":
    main()
