"""Stage two on several processes: torchrun's DDP (gloo, CPU) against one process, same global batch.

    python bench/bench_ddp.py [--batch-size 2] [--height 88 --width 176] [--steps 8] [--frames 16]
                              [--rounds 1] [--student mobilenetv2]

Writes the procedural sample dataset to a temporary folder, caches it with a cheap teacher (as
bench_train.py does) and runs ``tiekd train-student`` (TIE-KD, the paper's student) four ways,
each with the same global batch G = 2 x ``--batch-size``:

1. ``one process, 1 thread``: batch G (the reference);
2. ``one process, 2 threads``: batch G, ``OMP_NUM_THREADS=2`` (both cores to one process);
3. ``one process, --accumulate 2``: batch ``--batch-size``, two micro-batches a step, 2 threads;
4. ``torchrun, 2 processes``: batch ``--batch-size`` each, one thread each, gloo all-reduce.

Each run's rate is G / (median ``step_seconds`` of its steps.jsonl), the first step left out (warm-up):
process start-up is not counted. The four are run in turn, ``--rounds`` times, and the best round of
each is kept. On a CPU the processes share the machine's cores: 2 processes of one thread against one
process of two threads is what DDP costs or gains there; on GPUs each process has its own device.
This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_train import make_cache

from tiekd.data.kitti import KB_HEIGHT

WARMUP_STEPS = 1
"""Steps left out of the median: allocator, kernel selection, lazy initialisation."""
CORES = 2
"""Cores the comparison divides: one process of 2 threads against 2 processes of 1 thread."""


def train_args(args, sample, store: str, out: Path, batch_size: int, *extra) -> list[str]:
    scale = args.height / KB_HEIGHT
    crop = f"{KB_HEIGHT}x{round(args.width / scale)}"
    options = [
        "train-student", "--cache", store, "--data-root", sample.data_root, "--split", sample.train_split,
        "--student", args.student, "--no-pretrained", "--crop", crop, "--scale", scale,
        "--batch-size", batch_size, "--max-steps", args.steps, "--epochs", args.steps, "--workers", 0,
        "--device", "cpu", "--out", out, *extra,
    ]  # fmt: skip
    return [str(option) for option in options]


def samples_per_second(out: Path, global_batch: int) -> float:
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line]
    return global_batch / statistics.median(s["step_seconds"] for s in steps[WARMUP_STEPS:])


def run(command: list[str], threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=2, help="per process (micro-batch)")
    parser.add_argument("--height", type=int, default=88)
    parser.add_argument("--width", type=int, default=176)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--student", default="mobilenetv2")
    args = parser.parse_args()
    tiekd = [sys.executable, "-m", "tiekd"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tiekd"]
    global_batch = 2 * args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        sample, store = make_cache(Path(tmp), args.frames, "cpu", 0)
        ways = {
            f"one process, batch {global_batch}, 1 thread": (tiekd, global_batch, 1, []),
            f"one process, batch {global_batch}, {CORES} threads": (tiekd, global_batch, CORES, []),
            f"one process, batch {args.batch_size} x --accumulate 2": (tiekd, args.batch_size, CORES, ["--accumulate", 2]),
            f"torchrun, 2 processes x batch {args.batch_size}": (torchrun, args.batch_size, 1, []),
        }
        rates = {name: 0.0 for name in ways}
        for round_ in range(args.rounds):
            for i, (name, (launcher, batch_size, threads, extra)) in enumerate(ways.items()):
                out = Path(tmp) / f"run{round_}-{i}"
                run(launcher + train_args(args, sample, store, out, batch_size, *extra), threads)
                rates[name] = max(rates[name], samples_per_second(out, global_batch))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"{args.student} TIE-KD step at {args.height}x{args.width}, global batch {global_batch}, "
        f"{args.steps} steps (first {WARMUP_STEPS} left out), best of {args.rounds} rounds"
    )
    print("| way | threads per process | samples/s | x one process of 1 thread |")
    print("|---|---|---|---|")
    baseline = next(iter(rates.values()))
    for name, (_, _, threads, _) in ways.items():
        print(f"| {name} | {threads} | {rates[name]:.2f} | {rates[name] / baseline:.2f} |")


if __name__ == "__main__":
    main()
