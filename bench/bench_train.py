"""Stage two: a training step with the cached teacher against the teacher run online, and the data path's rate.

    python bench/bench_train.py [--batch-size 2] [--height 176 --width 352] [--steps 3] [--frames 8]
                                [--data-batches 12] [--workers W] [--device auto|cpu|cuda] [--amp]

Everything runs in one process on a procedural sample dataset written to a temporary folder and
cached with a cheap teacher (ResNet-18, regression head, at 88x304: the maps' content does not
matter for timing). The script prints, side by side:

1. One training step of the paper's student (MobileNetV2, DPM head) with the TIE-KD loss, as
   ``tiekd train-student`` runs it (``Trainer.train_step``: forward, loss, backward, clipping,
   AdamW, one-cycle), fed two ways: CACHED (the batch's teacher maps read from the TeacherCache,
   counted in the step although train-student reads them in its DataLoader workers) and ONLINE
   (a teacher of the AdaBins size class, EfficientNet-B5 with a regression head, run under no_grad
   with flip TTA on the training crop, as the cached maps were made). The two are interleaved
   step by step; each figure is the median over ``--steps`` after a warm-up. The ratio
   online / cached is what the cache saves per step.
2. The data path (DistillationSamples over the sample data and the cache, augmentation included,
   through the stage's DataLoader with ``--workers`` workers) in samples/s, against the samples/s the
   student consumes (batch size / cached step). Both are measured apart; where workers and the
   step share the same cores (a CPU-only machine) the data path is slower while training runs.

The model input is ``--height`` x ``--width``: the training crop spans the 352 rows of the KB crop,
as the paper's does, and is resized by height / 352 (``--scale`` of train-student), so the loss
skips the same share of sky rows. The paper trains at 352x704 with batch 8. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tiekd.data.kitti import KB_HEIGHT
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.teachers.load import Teacher, load_teacher, predict_depth
from tiekd.stages import cache_teacher
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.runtime import default_workers, resolve_device
from tiekd.stages.train_student import Trainer, build_trainer, make_loader, prepare
from tiekd.stages.training.config import TrainStudentConfig

FACTORY_SPEC = "python:tiekd.pipeline.students:build_student"
"""Teachers built by tiekd's own student factory (no weights to download)."""
CHEAP_TEACHER_ARGS = {"encoder": "resnet18", "head": "regression"}
"""The teacher that fills the cache: its maps only need to exist."""
CHEAP_TEACHER_INPUT = (88, 304)
"""(H, W) the cheap teacher runs at: a quarter of the KB crop, to cache quickly."""
ONLINE_TEACHER_ARGS = {"encoder": "efficientnet_b5", "head": "regression"}
"""A teacher of the AdaBins size class: AdaBins' EfficientNet-B5 encoder under tiekd's decoder (31 M
parameters; AdaBins' own decoder and mini-ViT bring it to 78 M, so the online figure is a lower bound)."""
STUDENT = "mobilenetv2"
"""The paper's student; TIE-KD gives it the DPM head."""
TEST_FRAMES = 2
"""The sample dataset's smallest test split; the bench only trains."""
WARMUP_STEPS = 1
"""Untimed steps first: allocator, kernel selection and lazy initialisation."""
SEED = 0


@dataclass
class StepTimes:
    """Seconds per timed step: teacher depth (store read or teacher forward) and student step."""

    teacher: list[float]
    student: list[float]

    @property
    def total(self) -> float:
        return statistics.median(t + s for t, s in zip(self.teacher, self.student))


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so the timer reads what the step cost."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), seconds), synchronised on both sides."""
    synchronise(device)
    start = time.perf_counter()
    result = fn()
    synchronise(device)
    return result, time.perf_counter() - start


def make_cache(folder: Path, n_frames: int, device: str, workers: int):
    """Write the sample dataset and cache its training split with the cheap teacher; returns (sample, store)."""
    sample = write_sample_dataset(folder / "sample", n_train=n_frames, n_test=TEST_FRAMES, seed=SEED)
    store = str(folder / "teacher.zarr")
    cache_teacher.run(
        CacheTeacherConfig(
            teacher=FACTORY_SPEC,
            teacher_args=CHEAP_TEACHER_ARGS,
            teacher_input=CHEAP_TEACHER_INPUT,
            data_root=sample.data_root,
            split=sample.train_split,
            out=store,
            device=device,
            workers=workers,
        )
    )
    return sample, store


def train_config(args, sample, store: str, out: Path, total_steps: int) -> TrainStudentConfig:
    """The train-student options of the bench: TIE-KD, the paper's student, a crop resized to H x W."""
    scale = args.height / KB_HEIGHT
    crop = (KB_HEIGHT, round(args.width / scale))
    return TrainStudentConfig(
        data_root=sample.data_root,
        split=sample.train_split,
        out=out,
        cache=store,
        student=STUDENT,
        method="tiekd",
        epochs=total_steps,
        max_steps=total_steps,
        batch_size=args.batch_size,
        crop=crop,
        scale=scale,
        pretrained=False,
        device=args.device,
        amp=args.amp,
        workers=args.workers,
        seed=SEED,
    )


def data_path_rate(loader, n_batches: int, batch_size: int) -> tuple[dict, float]:
    """(first batch, samples/s over the next n_batches); the first batch pays for starting the workers."""
    batches = iter(loader)
    first = next(batches)
    start = time.perf_counter()
    for _ in itertools.islice(batches, n_batches):
        pass
    return first, n_batches * batch_size / (time.perf_counter() - start)


def read_maps(cache: TeacherCache, ids: list[str]) -> torch.Tensor:
    """The batch's teacher maps from the store: (B, 1, H, W) metres at the KB crop."""
    return torch.stack([torch.from_numpy(cache.depth_of(i)) for i in ids])[:, None]


def online_depth(teacher: Teacher, image: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    """The teacher run on the training crop as the cached maps were made: no_grad, flip TTA."""
    image = image.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        return predict_depth(teacher.module, image, flip_tta=True)


def time_steps(
    trainer: Trainer, teacher: Teacher, cache: TeacherCache, batch: dict, ids: list[str], steps: int, amp: bool
) -> tuple[StepTimes, StepTimes]:
    """(cached, online) step times, interleaved step by step so both see the same machine load."""
    device = trainer.device
    cached, online = StepTimes([], []), StepTimes([], [])
    for step in range(WARMUP_STEPS + steps):
        _, read_s = timed(lambda: read_maps(cache, ids), device)
        _, cached_s = timed(lambda: trainer.train_step(batch), device)
        depth, teacher_s = timed(lambda: online_depth(teacher, batch["image"], device, amp), device)
        _, online_s = timed(lambda: trainer.train_step(batch | {"teacher": depth}), device)
        if step >= WARMUP_STEPS:
            cached.teacher.append(read_s)
            cached.student.append(cached_s)
            online.teacher.append(teacher_s)
            online.student.append(online_s)
    return cached, online


def parameters(module: torch.nn.Module) -> float:
    """Parameter count in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6


def machine(device: torch.device) -> str:
    """One line naming the processor or GPU, the threads and the torch version."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"machine: {where} ({device.type}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def print_setup(args, cfg: TrainStudentConfig, trainer: Trainer, teacher: Teacher, device: torch.device) -> None:
    print(machine(device))
    top = trainer.objective.top_row
    print(
        f"sizes: batch {args.batch_size}, training crop {cfg.crop[0]}x{cfg.crop[1]} of the KB crop resized by "
        f"{cfg.scale:g} to {args.height}x{args.width} (paper: batch 8 at 352x704), TIE-KD loss on rows "
        f"{top}..{args.height - 1}, {cfg.n_bins} bins, AMP {'on' if trainer.scaler.is_enabled() else 'off'}; "
        f"median of {args.steps} steps after {WARMUP_STEPS} warm-up"
    )
    print(
        f"student {STUDENT} (DPM head) {parameters(trainer.model):.2f} M parameters; online teacher "
        f"{ONLINE_TEACHER_ARGS['encoder']} (regression head) {parameters(teacher.module):.2f} M parameters"
    )


def print_steps(args, cached: StepTimes, online: StepTimes) -> None:
    median = statistics.median
    print(
        f"\n| one training step (batch {args.batch_size}, {args.height}x{args.width}) | teacher depth "
        f"| student step | total | steps/s |"
    )
    print("|---|---|---|---|---|")
    for name, times in (
        (f"cached: {args.batch_size} maps read from the store", cached),
        (f"online: {ONLINE_TEACHER_ARGS['encoder']} teacher, no_grad, flip TTA", online),
    ):
        print(
            f"| {name} | {median(times.teacher) * 1e3:.1f} ms | {median(times.student) * 1e3:.0f} ms "
            f"| {times.total * 1e3:.0f} ms | {1 / times.total:.2f} |"
        )
    print(
        f"| ratio online / cached | {median(online.teacher) / median(cached.teacher):.0f}x "
        f"| {median(online.student) / median(cached.student):.2f}x | {online.total / cached.total:.2f}x | |"
    )


def print_data_path(args, data_rate: float, cached: StepTimes) -> None:
    consumed = args.batch_size / cached.total
    verdict = "keeps up" if data_rate >= consumed else "does NOT keep up"
    print("\n| data path against the student | samples/s |")
    print("|---|---|")
    print(
        f"| data path: DistillationSamples (image, cached map, augmentation), DataLoader "
        f"{args.workers} workers, {args.data_batches} batches | {data_rate:.1f} |"
    )
    print(f"| student consumes: batch {args.batch_size} / cached step | {consumed:.2f} |")
    print(f"| data path / student | {data_rate / consumed:.1f}x ({verdict}) |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=176, help="model input height (the KB crop's 352 rows, resized)")
    parser.add_argument("--width", type=int, default=352, help="model input width")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each kind")
    parser.add_argument("--frames", type=int, default=8, help="frames of the sample dataset")
    parser.add_argument("--data-batches", type=int, default=12, help="batches timed on the data path")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="float16 autocast on CUDA")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample, store = make_cache(folder, args.frames, args.device, args.workers)
        total_steps = 2 * (WARMUP_STEPS + args.steps) + args.data_batches + 1
        cfg = train_config(args, sample, store, folder / "run", total_steps)
        records, cache_ref = prepare(cfg)
        trainer = build_trainer(cfg, len(records), device)
        batch, data_rate = data_path_rate(
            make_loader(cfg, records, cache_ref, trainer), args.data_batches, args.batch_size
        )
        teacher = load_teacher(FACTORY_SPEC, args=ONLINE_TEACHER_ARGS, device=device)
        ids = [r.rgb for r in records[: args.batch_size]]
        trainer.model.train()
        cached, online = time_steps(trainer, teacher, TeacherCache.open(*cache_ref), batch, ids, args.steps, args.amp)
    print_setup(args, cfg, trainer, teacher, device)
    print_steps(args, cached, online)
    print_data_path(args, data_rate, cached)


if __name__ == "__main__":
    main()
