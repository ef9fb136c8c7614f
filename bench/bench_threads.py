"""Thread settings against a competing busy process: one training step of the default demo.

    python bench/bench_threads.py [--steps 6] [--threads 0,1,2] [--competitors 1]

Each setting runs in a fresh interpreter (OpenMP reads its settings once, at start-up): torch with
1 thread, 2 threads, and 0 = torch's own default (one per core), each ALONE and again beside
``--competitors`` busy processes (``while True: pass``, as another user's job would be). The step is
the default demo's student step (MobileNetV2, DPM head, TIE-KD loss, batch 4 at 44x88, i.e. the
352x704 crop at scale 0.125), on a fixed synthetic batch so no data loading is timed; each figure is
the median over ``--steps`` steps after two warm-up steps.

It prints seconds per step and two ratios per setting: BUSY/ALONE (how badly the setting degrades
when a core is taken) and against torch's default alone. On a machine with few cores, OpenMP threads
that outnumber the free cores wait for each other at every parallel region; the figures show how
much, and which setting degrades gracefully (stages/runtime.py ``default_threads``).
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
import time
from pathlib import Path

DEMO_BATCH = 4
"""The default demo's batch size (stages/demo.py FULL)."""
DEMO_INPUT = (44, 88)
"""The 352x704 training crop at the default demo's scale 0.125."""
WARMUP_STEPS = 2
BUSY_LOOP = "while True: pass"


def child(threads: int, steps: int) -> dict:
    """In a fresh interpreter: median seconds of one demo training step with ``threads`` torch threads."""
    import torch

    from tiekd.stages.train_student import build_trainer
    from tiekd.stages.training.config import TrainStudentConfig

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        cfg = TrainStudentConfig(
            data_root=Path(folder), split=Path(folder) / "split.txt", out=Path(folder), cache="unused",
            scale=DEMO_INPUT[0] / 352, batch_size=DEMO_BATCH, pretrained=False, device="cpu", workers=0,
        )  # fmt: skip
        trainer = build_trainer(cfg, n_frames=100 * DEMO_BATCH, device=torch.device("cpu"))
        generator = torch.Generator().manual_seed(0)
        batch = {
            "image": torch.rand(DEMO_BATCH, 3, *DEMO_INPUT, generator=generator),
            "teacher": 1 + 79 * torch.rand(DEMO_BATCH, 1, *DEMO_INPUT, generator=generator),
        }
        times = []
        for _ in range(WARMUP_STEPS + steps):
            start = time.perf_counter()
            trainer.train_step(batch)
            times.append(time.perf_counter() - start)
    return {"threads": torch.get_num_threads(), "seconds": statistics.median(times[WARMUP_STEPS:])}


def measure(threads: int, steps: int, competitors: int) -> dict:
    """Run ``child`` in a subprocess, beside ``competitors`` busy processes."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        command = [sys.executable, __file__, "--child", str(threads), "--steps", str(steps)]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", default="0,1,2", help="Comma-separated torch thread counts; 0 = torch's default.")
    parser.add_argument("--competitors", type=int, default=1, help="Busy processes in the BUSY runs.")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; demo step, batch {DEMO_BATCH} at "
          f"{DEMO_INPUT[0]}x{DEMO_INPUT[1]}, median of {args.steps}; BUSY = beside {args.competitors} busy process(es)")  # fmt: skip
    print(f"{'torch threads':>16} | {'alone s':>8} | {'busy s':>8} | {'busy/alone':>10} | {'alone/default':>13} | {'busy/default':>12}", flush=True)  # fmt: skip
    default_alone = None
    for setting in [int(t) for t in args.threads.split(",")]:
        alone, busy = measure(setting, args.steps, 0), measure(setting, args.steps, args.competitors)
        if setting == 0:
            default_alone = alone["seconds"]
        name = f"{alone['threads']}" + (" (default)" if setting == 0 else "")
        against = (
            f"{alone['seconds'] / default_alone:13.2f} | {busy['seconds'] / default_alone:12.2f}"
            if default_alone
            else f"{'':>13} | {'':>12}"
        )
        print(f"{name:>16} | {alone['seconds']:8.3f} | {busy['seconds']:8.3f} | {busy['seconds'] / alone['seconds']:10.2f} | {against}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
