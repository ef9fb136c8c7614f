"""What extra teacher-labelled frames buy: the same student, the same steps, 0, 128 and 512 more frames.

    python bench/bench_unlabelled.py [--steps 150] [--extra 128 512] [--train 16] [--test 8]
                                     [--scale 0.0625] [--batch-size 4] [--teacher-steps 150]
                                     [--decoder light] [--workdir DIR] [--workers W] [--device cpu|cuda]

The world is the procedural KITTI sample (``tiekd sample-data``): ``--train`` labelled frames,
``--test`` test frames, and ``max(--extra)`` unlabelled frames of scenes of their own
(``sample-data --unlabelled``). As in the demo (stages/demo.py), the teacher is a larger network
(ResNet-18) trained on the dense GT of the labelled frames; it is cached over the labelled split and,
with ``cache-teacher --images ... --fit crop``, over the first N unlabelled frames for each N of
``--extra``. Then one student (MobileNetV2, TIE-KD) trains ``--steps`` steps from each (both
networks with ``--decoder light`` by default: the standard decoder's full-resolution convolutions
cost most of a CPU step at this size):

- ``labelled only``: the training split's teacher maps alone;
- ``+ N unlabelled``: the same split plus the group of N unlabelled frames, half of every batch
  (``train-student --unlabelled GROUP=0.5``), so every run sees the same number of frames a step and
  only the pool of unlabelled frames grows.

Every student is evaluated on the sample's test split (KITTI protocol, Garg crop, 80 m), and the
script prints AbsRel, RMSE and d1 side by side with the teacher's, the machine and the settings.
Every run uses one torch thread and the same seed, so the figures repeat on one machine; the
sample's rendering (about 0.25 s a frame) is kept in ``--workdir`` and reused. This is a script,
not a test; its numbers are of a toy world at a toy resolution.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tiekd.data.sample.kitti import sample_paths, write_sample_dataset
from tiekd.stages import cache_teacher, evaluate, train_student
from tiekd.stages.caching.config import CacheTeacherConfig
from tiekd.stages.runtime import reproducible, resolve_device
from tiekd.stages.training.config import TrainStudentConfig

TEACHER_ENCODER = "resnet18"
"""Larger than the student (11.7 M parameters against 3.5 M)."""
STUDENT = "mobilenetv2"
SHARE = 0.5
"""Share of every batch taken from the unlabelled group."""
METRICS = (("abs_rel", "AbsRel", "{:.4f}"), ("rmse", "RMSE (m)", "{:.3f}"), ("d1", "d1", "{:.4f}"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of every student")
    parser.add_argument("--extra", type=int, nargs="+", default=[128, 512], help="unlabelled frames added")
    parser.add_argument("--train", type=int, default=16, help="labelled training frames")
    parser.add_argument("--test", type=int, default=8, help="test frames")
    parser.add_argument("--scale", type=float, default=0.0625, help="resolution factor of training and inference")
    parser.add_argument("--decoder", default="light", help="decoder of the teacher and the students")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=150)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sample and runs here (reused)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def make_sample(args, root: Path):
    """The sample with max(--extra) unlabelled frames, rendered once; seconds spent."""
    paths, start = sample_paths(root / "data"), time.perf_counter()
    wanted = max(args.extra)
    have = len(paths.unlabelled.read_text().splitlines()) if paths.unlabelled.exists() else 0
    done = paths.test_split.exists() and len(paths.train_split.read_text().splitlines()) == args.train
    if not (done and have == wanted):
        paths = write_sample_dataset(root / "data", n_train=args.train, n_test=args.test, n_unlabelled=wanted)
    return paths, time.perf_counter() - start


def train(args, out: Path, **options) -> None:
    """One run of ``--steps`` (or the teacher's) steps, unless ``out`` already holds it."""
    if (out / "last.pt").exists():
        return
    steps = options.pop("max_steps", args.steps)
    cfg = TrainStudentConfig(out=out, max_steps=steps, epochs=100_000, scale=args.scale, batch_size=args.batch_size,
                             pretrained=False, device=args.device, workers=args.workers, seed=0, save_every=10_000,
                             decoder=args.decoder, **options)  # fmt: skip
    train_student.run(cfg)


def cache(args, store: Path, teacher: Path, **source) -> None:
    """The teacher's maps of a split or of image sources, into ``store`` (group teacher/NAME)."""
    height, width = 352, 1216  # the KB crop the maps cover
    size = (round(height * args.scale), round(width * args.scale))
    cfg = CacheTeacherConfig(teacher=f"checkpoint:{teacher}", out=str(store), name="teacher", device=args.device,
                             teacher_input=size, workers=args.workers, batch_size=8, **source)  # fmt: skip
    cache_teacher.run(cfg)


def cache_all(args, root: Path, sample, teacher: Path) -> Path:
    """The teacher over the labelled split and over the first N unlabelled frames, for each N."""
    store = root / "cache.zarr"
    if (store / "teacher").exists():
        return store
    cache(args, store, teacher, data_root=sample.data_root, split=sample.train_split)
    lines = sample.unlabelled.read_text().splitlines()
    for n in args.extra:
        listed = sample.unlabelled.with_name(f"unlabelled{n}.txt")
        listed.write_text("\n".join(lines[:n]) + "\n")
        cache(args, store, teacher, data_root=None, split=None, images=(str(listed),), fit="crop", split_name=f"u{n}")
    return store


def score(args, sample, **source) -> dict[str, float]:
    cfg = evaluate.EvaluateConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=sample.test_split,
                                  device=args.device, workers=args.workers, **source)  # fmt: skip
    return evaluate.run(cfg).metrics


def run_all(args, root: Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Every run and its test metrics by row name; seconds of each phase."""
    seconds = {}
    sample, seconds["sample"] = make_sample(args, root)
    start = time.perf_counter()
    train(args, root / "teacher", data_root=sample.data_root, gt_root=sample.dense_gt_root, split=sample.train_split,
          student=TEACHER_ENCODER, method="supervised", max_steps=args.teacher_steps)  # fmt: skip
    seconds["teacher"], start = time.perf_counter() - start, time.perf_counter()
    store = cache_all(args, root, sample, root / "teacher" / "last.pt")
    seconds["cache"], start = time.perf_counter() - start, time.perf_counter()
    common = {"data_root": sample.data_root, "split": sample.train_split, "cache": str(store), "teacher": "teacher",
              "split_name": "train", "student": STUDENT, "method": "tiekd"}  # fmt: skip
    rows = {f"teacher ({TEACHER_ENCODER}, dense GT)": score(args, sample, checkpoint=root / "teacher" / "last.pt")}
    train(args, root / "student-0", **common)
    rows["student, labelled only"] = score(args, sample, checkpoint=root / "student-0" / "last.pt")
    for n in args.extra:
        train(args, root / f"student-{n}", unlabelled=(f"u{n}={SHARE}",), **common)
        rows[f"student, + {n} unlabelled"] = score(args, sample, checkpoint=root / f"student-{n}" / "last.pt")
    seconds["students"] = time.perf_counter() - start
    return rows, seconds


def table(rows: dict[str, dict]) -> str:
    head = f"| {'run':32} | " + " | ".join(f"{title:>8}" for _, title, _ in METRICS) + " |"
    lines = [head, "|" + "-" * 34 + "|" + "|".join("-" * 9 + ":" for _ in METRICS) + "|"]
    for name, metrics in rows.items():
        values = " | ".join(f"{fmt.format(metrics[key]):>8}" for key, _, fmt in METRICS)
        lines.append(f"| {name:32} | {values} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    args.device = device.type
    with tempfile.TemporaryDirectory() as scratch, reproducible(1, device) as settings:
        root = args.workdir or Path(scratch)
        start = time.perf_counter()
        rows, seconds = run_all(args, root)
        total = time.perf_counter() - start
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device.type}; {settings}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"sample: {args.train} labelled training frames, {args.test} test frames, {max(args.extra)} unlabelled "
          f"(KITTI sample, seed 0)")  # fmt: skip
    print(f"teacher: {TEACHER_ENCODER}, supervised on the dense GT of the labelled frames, {args.teacher_steps} steps; "
          f"{args.decoder} decoder for the teacher and the students")  # fmt: skip
    print(f"students: {STUDENT}, TIE-KD, {args.steps} steps of batch {args.batch_size} at scale {args.scale} "
          f"({round(352 * args.scale)}x{round(704 * args.scale)} crops), no pretrained weights; with unlabelled frames "
          f"{SHARE:.0%} of every batch is theirs")  # fmt: skip
    print(f"test split: {args.test} frames, KITTI protocol (Garg crop, depth up to 80 m)")
    print()
    print(table(rows))
    print()
    phases = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    print(f"took {total:.0f} s ({phases}); torch {torch.__version__}")


if __name__ == "__main__":
    main()
