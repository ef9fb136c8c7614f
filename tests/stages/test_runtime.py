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


def threads_in_a_fresh_process(omp_num_threads: str | None, *, code: str = "set_threads(None)") -> int:
    """Torch's threads after ``code`` in a new interpreter with this OMP_NUM_THREADS."""
    import os
    import subprocess
    import sys

    # Every *_NUM_THREADS goes: a dask LocalCluster started earlier in the session leaves
    # MKL_NUM_THREADS=1 in this process's environment, and torch takes the smaller count.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env |= {"OMP_NUM_THREADS": omp_num_threads} if omp_num_threads else {}
    code = f"from tiekd.stages.runtime import set_threads; import torch; {code}; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True).stdout)


def test_default_threads_leave_a_core_free_and_respect_omp_num_threads():
    import os

    cores = len(os.sched_getaffinity(0))
    assert threads_in_a_fresh_process(None) == max(1, cores - 1)
    # torch's own reading of OMP_NUM_THREADS (it may cap it at the cores) stays as it is.
    assert threads_in_a_fresh_process("2") == threads_in_a_fresh_process("2", code="pass") == 2


def test_threads_option_reaches_torch(tmp_path):
    import torch

    from tiekd.cli import main

    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["--threads", "3", "sample-data", str(tmp_path), "--train", "1", "--test", "2"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_reproducible_sets_and_restores_threads_and_determinism():
    import torch

    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with runtime.reproducible(1, torch.device("cpu")) as settings:
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert settings.startswith(f"torch {torch.__version__}, 1 CPU thread, CPU instructions ")
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
