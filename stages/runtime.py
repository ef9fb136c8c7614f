"""What every stage needs from its surroundings: the device, progress display, timing, sizes."""

from __future__ import annotations

import os
import sys
import time
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


COMPUTE_CORES = 2
"""Cores left to the main process's compute threads: DataLoader workers that compete with them
for the last cores make oneDNN's threads wait on each other (10x slower steps measured on 2 cores)."""


def default_workers() -> int:
    """DataLoader workers: the cores beyond COMPUTE_CORES, at most 8 (0 on a 2-core machine)."""
    return min(8, max(0, (os.cpu_count() or 1) - COMPUTE_CORES))


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
