"""One train-student per run directory: a second one stops in one line before touching the run,
and a killed run leaves no lock behind (the kernel's flock goes with its process)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from support.commands import error_line, train_args

from tiekd.stages.training.log import RUN_LOCK, one_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOLD = "import sys, time; from pathlib import Path; from tiekd.stages.training.log import one_run\n" \
    "with one_run(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)\n"  # fmt: skip


def test_a_second_run_into_a_held_directory_is_one_line_and_writes_nothing(sample, store, tmp_path, cli):
    out = tmp_path / "run"
    with one_run(out):
        line = error_line(cli(*train_args(sample, store, out, "--max-steps", 1)))
    assert f"another train-student (pid {os.getpid()}) is running in {out}" in line
    assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]


def test_a_killed_holder_leaves_the_directory_free(sample, store, tmp_path, cli, subprocess_env):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, env=subprocess_env, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert "is running in" in error_line(cli(*train_args(sample, store, out, "--max-steps", 1)))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    result = cli(*train_args(sample, store, out, "--max-steps", 1))
    assert result.exit_code == 0, result.output
    assert (out / "last.pt").is_file()
