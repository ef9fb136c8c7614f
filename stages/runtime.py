"""What every stage needs from its surroundings: the device, progress display, timing, sizes."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click
import torch

from tiekd.pipeline.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device`` (auto = cuda when present); decided once per run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto")
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r} is not one of {', '.join(DEVICES)}")
    return torch.device(name)


def use_amp(asked: bool, device: torch.device) -> bool:
    """Whether float16 autocast runs: only on CUDA; asking for it on the CPU says so once."""
    if asked and device.type != "cuda":
        click.echo(f"note: --amp works on CUDA only; running in float32 on {device.type}", err=True)
    return asked and device.type == "cuda"


AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""``--amp`` of train-student: the autocast dtype it names."""


def autocast_dtype(asked: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype train-student's autocast runs in, or None for float32.

    fp16 runs on CUDA only (with loss scaling; on the CPU it says so once and runs float32, as
    ``--amp`` always did). bf16 runs where it is asked: on CUDA, and on the CPU too, where torch's
    autocast really computes convolutions and matrix products in bfloat16 (fast on CPUs with
    AVX512-BF16 or AMX, slower elsewhere), so asking for it is never silently ignored.
    """
    if asked is None:
        return None
    if asked == "fp16" and device.type != "cuda":
        click.echo(f"note: --amp fp16 works on CUDA only; running in float32 on {device.type}", err=True)
        return None
    if asked == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16 or leave --amp out")
    return AUTOCAST_DTYPES[asked]


COMPUTE_CORES = 2
"""Cores left to the main process's compute threads: DataLoader workers that compete with them
for the last cores make oneDNN's threads wait on each other (many times slower steps on 2 cores:
README, Benchmarks; bench/bench_threads.py)."""


SPARE_CORES = 1
"""Cores torch's CPU threads leave free by default. With a thread on every core, one competing busy
process (another job, a DataLoader worker) makes every OpenMP barrier of a step wait for a thread
that is not running, and the demo's steps ran many times slower on 2 cores. With a core spare, the
competitor takes that core and the step keeps its pace (README, Benchmarks; bench/bench_threads.py)."""

TORCH_DEFAULT_THREADS = torch.get_num_threads()
"""torch's thread count when tiekd was imported: a program that changed it since chose its own."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or taskset allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Torch CPU threads where nothing else decides: every usable core but SPARE_CORES, at least 1."""
    return max(1, usable_cores() - SPARE_CORES)


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads for this process and return the count in effect.

    ``threads`` (``--threads``) wins; without it, OMP_NUM_THREADS where set (torchrun sets it per
    process) or a count the embedding program already set are kept, else :func:`default_threads`.
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads() != TORCH_DEFAULT_THREADS:
            return torch.get_num_threads()
        threads = default_threads()
    torch.set_num_threads(threads)
    return threads


@contextmanager
def reproducible(threads: int, device: torch.device):
    """Run the block with ``threads`` torch threads and, on the CPU, torch's deterministic algorithms;
    both are restored afterwards. Yields a one-line description of the settings for reports.

    Float sums depend on how work is split among threads, so figures repeat only at one thread
    count (and one torch version and CPU instruction set). On CUDA several kernels the demo needs
    (bilinear upsampling's backward) have no deterministic version, so it is left off there.
    """
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    deterministic = device.type == "cpu"
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield (
            f"torch {torch.__version__}, {threads} CPU thread{'s' * (threads != 1)}, "
            f"CPU instructions {torch.backends.cpu.get_cpu_capability()}, "
            f"deterministic algorithms {'on' if deterministic else 'off (CUDA)'}"
        )
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


MAX_WORKERS = 8
"""Most DataLoader workers a process starts by default: the MobileNetV2 student on one H200 takes
about 6 cores of a packed store's data path and 9 of the PNG path's (README, Benchmarks)."""


def default_workers() -> int:
    """DataLoader workers of this process: its share of the usable cores (its affinity mask, e.g. a
    SLURM allocation, split among torchrun's LOCAL_WORLD_SIZE processes of the node) beyond
    COMPUTE_CORES, at most MAX_WORKERS (0 on a 2-core machine)."""
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(MAX_WORKERS, max(0, usable_cores() // processes - COMPUTE_CORES))


def directory_bytes(path: str | Path) -> int | None:
    """Bytes of all files below a local folder; None for remote URLs."""
    if "://" in str(path):
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class Rate:
    """Items per second since construction, for progress bars and summaries."""

    def __init__(self):
        self.start = time.perf_counter()
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def per_second(self) -> float:
        return self.count / max(self.seconds, 1e-9)


LOG_EVERY_SECONDS = 30.0
"""Where output is a log, not a terminal (a cluster job), a progress line this often."""


class Progress:
    """click's progress bar (percent, ETA, a status text) on a terminal; on a log, one line every
    LOG_EVERY_SECONDS and one at the end, so a batch job's log shows rate and ETA too."""

    def __init__(self, length: int, label: str, *, quiet: bool = False):
        self.length, self.label, self.done, self.text, self.quiet = length, label, 0, "", quiet
        self.logged_done = -1
        self.start = self.logged = time.perf_counter()
        self.bar = None
        if sys.stdout.isatty() and not quiet:
            self.bar = click.progressbar(
                length=length, label=label, show_eta=True, show_percent=True, width=24, item_show_func=lambda text: text
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.__enter__()
        elif not self.quiet:
            click.echo(f"{self.label}: {self.length} to do")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif exc[0] is None and not self.quiet and self.logged_done != self.done:
            self._log()

    def update(self, n: int, text: str = "") -> None:
        """``n`` more items done; ``text`` is the status shown (rate, loss)."""
        self.done, self.text = self.done + n, text
        if self.bar is not None:
            self.bar.update(n, text)
        elif not self.quiet and time.perf_counter() - self.logged >= LOG_EVERY_SECONDS:
            self._log()

    def _log(self) -> None:
        self.logged, self.logged_done = time.perf_counter(), self.done
        elapsed = self.logged - self.start
        eta = elapsed / max(self.done, 1) * (self.length - self.done)
        status = f", {self.text}" if self.text else ""
        click.echo(f"{self.label}: {self.done}/{self.length} in {elapsed:.0f} s, ETA {eta:.0f} s{status}")


def progress(length: int, label: str, *, quiet: bool = False) -> Progress:
    """Progress display for ``length`` items; use as a context manager and call ``update``."""
    return Progress(length, label, quiet=quiet)
