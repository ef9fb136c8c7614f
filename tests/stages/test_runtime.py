"""Progress output on a log (not a terminal): periodic and final lines with rate and ETA."""

import click
from click.testing import CliRunner

from tiekd.stages import runtime


def test_progress_on_a_log_prints_periodic_and_final_lines(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: now[0])

    @click.command()
    def job():
        with runtime.progress(5, "caching s.zarr") as bar:
            for step in range(1, 6):  # an update every 20 s; a line at most every 30 s, and a last one
                now[0] = 20.0 * step
                bar.update(1, f"{step}.0 frames/s")

    lines = CliRunner().invoke(job).output.splitlines()
    assert lines == [
        "caching s.zarr: 5 to do",
        "caching s.zarr: 2/5 in 40 s, ETA 60 s, 2.0 frames/s",
        "caching s.zarr: 4/5 in 80 s, ETA 20 s, 4.0 frames/s",
        "caching s.zarr: 5/5 in 100 s, ETA 0 s, 5.0 frames/s",
    ]


def test_quiet_progress_prints_nothing():
    @click.command()
    def job():
        with runtime.progress(2, "evaluating", quiet=True) as bar:
            bar.update(2)

    assert CliRunner().invoke(job).output == ""
