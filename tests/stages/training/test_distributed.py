"""train-student under torchrun, for real: 2 CPU processes with gloo against one process.

N processes of batch B take, step by step, the micro-batches one process accumulating N takes
(stages/training/sampler.py), so a 2-process run of batch 2 equals a 1-process run of batch 2 with
``--accumulate 2``, and with ``--sync-bn`` (BatchNorm over both processes' samples) a 1-process
run of batch 4. The runs do not rotate the teacher map (``--no-rotate-teacher``), so every pixel
is valid, every sample weighs the same in the loss, and the mean of two batch-2 losses is the
batch-4 loss; they use the paper form, whose float64 SSIM keeps runs that differ only in the order
of float sums within the noise below (the code form's released float32 SSIM moves them 1e-3 apart
within 6 steps). The learning rate is large enough that the losses fall by about 30 % in 8 steps,
so a wrong gradient (or BatchNorm) shows as a clear difference: the run without --sync-bn differs
by 500x the tolerance the equal runs meet.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.commands import evaluate_args, train_args
from support.runs import assert_same, train_config

from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.errors import ConfigError
from tiekd.stages.train_student import run
from tiekd.stages.training.log import read_jsonl

OPTIONS = dict(dpm_form="paper", rotate_teacher=False, lr=1e-3, epochs=4, save_every=1)
"""8 training frames, global batch 4: 2 steps an epoch, 8 steps; last.pt after every step."""
TIMING = ("step_seconds", "data_seconds")
SECONDS = 240
"""Limit for one torchrun command on a busy 2-core machine (takes about 20 s)."""

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def options_args(sample) -> list:
    return ["--dpm-form", "paper", "--no-rotate-teacher", "--lr", 1e-3, "--epochs", 4, "--save-every", 1,
            "--val-split", sample.test_split]  # fmt: skip


def torchrun(sample, store, out, *extra, restarts: int = 0) -> list[str]:  # noqa: F811
    """torchrun with 2 processes of batch 2 (gloo on the CPU) on ``tiekd train-student``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    launcher += ["--max-restarts", str(restarts), "-m", "tiekd"]
    return launcher + [str(a) for a in train_args(sample, store, out, *options_args(sample), *extra)]


@pytest.fixture(scope="module")
def env():
    """One thread a process; torchrun's restarts without its shared store (see stages/training/distributed.py)."""
    return dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")


@pytest.fixture(scope="module")
def runs(sample, store, tmp_path_factory, env, one_torch_thread):  # noqa: F811
    """Four finished runs: 2 processes x batch 2 with and without --sync-bn (torchrun), and their
    1-process equivalents, batch 4 and batch 2 x --accumulate 2. The torchruns run beside the
    in-process runs (60 s -> 41 s on 2 cores): start-up and rendezvous are mostly waiting."""
    root = tmp_path_factory.mktemp("ddp")
    common = dict(OPTIONS, val_split=sample.test_split)
    with contextlib.ExitStack() as logs:
        launched = {  # the two torchruns beside the in-process runs: their start-up is mostly waiting
            name: subprocess.Popen(torchrun(sample, store, root / name, *extra), env=env, stdout=subprocess.DEVNULL,
                                   stderr=logs.enter_context((root / f"{name}.log").open("w")))  # fmt: skip
            for name, extra in (("two_b2_sync", ["--sync-bn"]), ("two_b2", []))
        }
        run(train_config(sample, store, root / "one_b4", batch_size=4, **common))
        run(train_config(sample, store, root / "one_b2_k2", batch_size=2, accumulate=2, **common))
        for launcher in launched.values():
            launcher.wait(timeout=SECONDS)
    for name, launcher in launched.items():
        assert launcher.returncode == 0, (root / f"{name}.log").read_text()[-3000:]
    return root


def steps(folder, key):
    return [s[key] for s in read_jsonl(folder / "steps.jsonl")]


GRAD_NORM_NOISE = 1e-3
"""Relative grad-norm difference of runs equal but for the order of float sums (8 steps)."""


def relative_differences(a, b) -> list[float]:
    return [abs(x - y) / abs(y) for x, y in zip(a, b)]


def distance(a, b, *, buffers: bool) -> float:
    """Euclidean distance between the parameters (or the BatchNorm running statistics) of two
    runs' last.pt."""
    a, b = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    keys = [k for k in a if a[k].is_floating_point() and ("running_" in k) == buffers]
    return sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys) ** 0.5


class TestTwoProcessesEqualOne:
    def test_sync_bn_run_equals_one_process_of_the_global_batch(self, runs):
        two, one, unsynchronised = runs / "two_b2_sync", runs / "one_b4", runs / "two_b2"
        assert steps(two, "step") == steps(one, "step") == list(range(1, 9))
        assert steps(two, "lr") == steps(one, "lr")
        assert max(relative_differences(steps(two, "loss"), steps(one, "loss"))) < 1e-5
        # Float noise grows with the steps: the grad norms of step 8 differed by 1.1e-4 (relative) on
        # AVX512 and on AVX2 CPUs alike (ATEN_CPU_CAPABILITY=avx2), the run without --sync-bn by more
        # than 5e-2 (test_runs_that_should_differ_do): 1e-3 keeps a 50x margin on both sides.
        assert max(relative_differences(steps(two, "grad_norm"), steps(one, "grad_norm"))) < GRAD_NORM_NOISE
        # Adam moves weights of near-zero gradient by about +-lr whatever their rounding, so the
        # weights are compared as a whole, against the distance of the run that truly differs.
        for buffers in (False, True):
            assert distance(two, one, buffers=buffers) < 0.01 * distance(unsynchronised, one, buffers=buffers)
        validation = [e["val"]["rmse"] for e in read_jsonl(one / "epochs.jsonl")]
        assert max(relative_differences([e["val"]["rmse"] for e in read_jsonl(two / "epochs.jsonl")], validation)) < 1e-4

    def test_runs_that_should_differ_do(self, runs):
        """Without --sync-bn the BatchNorm statistics (and so the gradients) are of 2 samples, not 4:
        the same comparisons tell that run from the batch-4 run by far more than their tolerance."""
        losses, unsynchronised = steps(runs / "one_b4", "loss"), runs / "two_b2"
        assert max(relative_differences(steps(unsynchronised, "loss"), losses)) > 5e-3
        assert max(relative_differences(steps(unsynchronised, "grad_norm"), steps(runs / "one_b4", "grad_norm"))) > 5e-2
        assert losses[-1] < 0.8 * losses[0], "the learning rate moves the loss"

    def test_two_processes_equal_one_process_accumulating(self, runs):
        """The same micro-batches, the same mean gradient: the same weights. The BatchNorm running
        statistics differ, as in any DDP run: DDP keeps rank 0's, accumulation updates them with
        every micro-batch."""
        two, one = runs / "two_b2", runs / "one_b2_k2"
        assert max(relative_differences(steps(two, "loss"), steps(one, "loss"))) < 1e-6
        assert max(relative_differences(steps(two, "grad_norm"), steps(one, "grad_norm"))) < 1e-5
        assert distance(two, one, buffers=False) < 1e-4


class TestOneWriter:
    def test_one_set_of_records(self, runs):
        folder = runs / "two_b2_sync"
        names = sorted(p.name for p in folder.iterdir())
        events = [name for name in names if name.startswith("events.out.tfevents.")]
        assert len(events) == 1, "one TensorBoard writer"
        records = [".run.lock", "best.pt", "config.yaml", "epochs.jsonl", "last.pt", "run.json", "steps.jsonl"]
        assert [name for name in names if name not in events] == records
        assert [e["step"] for e in read_jsonl(folder / "epochs.jsonl")] == [2, 4, 6, 8]
        config = json.loads((folder / "run.json").read_text())
        assert (config["processes"], config["global_batch"], config["batch_size"], config["sync_bn"]) == (2, 4, 2, True)
        assert config["steps_per_epoch"] == 2 and config["total_steps"] == 8

    def test_best_is_the_lowest_validation_rmse(self, runs):
        folder = runs / "two_b2_sync"
        epochs = read_jsonl(folder / "epochs.jsonl")
        lowest = min(epochs, key=lambda e: e["val"]["rmse"])
        best = load_checkpoint(folder / "best.pt")
        assert best["step"] == lowest["step"] and best["best"] == {"rmse": lowest["val"]["rmse"], "step": lowest["step"]}


class TestCheckpointsAreWorldSizeFree:
    def test_evaluates_in_one_process(self, runs, sample, cli):
        state = load_checkpoint(runs / "two_b2_sync" / "last.pt")
        assert not [key for key in state["model"] if key.startswith("module.")]
        assert state["global_batch"] == 4
        student = student_from_checkpoint(state)  # a plain BatchNorm student, loaded strictly
        assert not [m for m in student.modules() if "Sync" in type(m).__name__]
        result = cli(*evaluate_args(sample, "--checkpoint", runs / "two_b2_sync" / "last.pt"))
        assert result.exit_code == 0, result.output
        assert "rmse" in result.output


def worker(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    """The training process of ``rank`` that torchrun started."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no worker of rank {rank}")


def stopped(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for_steps(folder, n: int, launcher: subprocess.Popen) -> None:
    deadline = time.time() + SECONDS
    path = folder / "steps.jsonl"
    while time.time() < deadline and launcher.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run stopped or took too long before step {n}")


@pytest.fixture
def log(tmp_path):
    """torchrun's output, tmp_path/torchrun.log, closed after the test."""
    with (tmp_path / "torchrun.log").open("w") as file:
        yield file


class TestFaults:
    def test_kill_9_stops_the_group_and_resume_continues_exactly(
        self, runs, sample, store, tmp_path, env, log  # noqa: F811
    ):
        killed = tmp_path / "killed"
        launcher = subprocess.Popen(torchrun(sample, store, killed), env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for_steps(killed, 3, launcher)
        ranks = [worker(launcher, 0), worker(launcher, 1)]
        os.kill(ranks[1].pid, signal.SIGKILL)
        assert launcher.wait(timeout=SECONDS) != 0
        assert stopped(ranks[0]), "torchrun stopped the process that was not killed"
        reached = load_checkpoint(killed / "last.pt")["step"]
        assert 2 <= reached < 8, "the kill must land mid-run"
        shutil.copytree(killed, tmp_path / "one")

        # The same command with --resume auto under --max-restarts 1; its writer is killed once
        # more mid-run and torchrun's new group continues from last.pt by itself.
        launcher = subprocess.Popen(
            torchrun(sample, store, killed, "--resume", "auto", restarts=1),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_steps(killed, reached + 2, launcher)
        os.kill(worker(launcher, 0).pid, signal.SIGKILL)
        assert launcher.wait(timeout=SECONDS) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]

        whole = runs / "two_b2"
        strip = [{k: v for k, v in s.items() if k not in TIMING} for s in read_jsonl(whole / "steps.jsonl")]
        assert [{k: v for k, v in s.items() if k not in TIMING} for s in read_jsonl(killed / "steps.jsonl")] == strip
        assert read_jsonl(killed / "epochs.jsonl") == read_jsonl(whole / "epochs.jsonl")
        for name, resumable in (("last.pt", ("optimizer", "scheduler")), ("best.pt", ())):
            a, b = load_checkpoint(whole / name), load_checkpoint(killed / name)
            for key in ("model", "step", "best", *resumable):
                assert_same(a[key], b[key], f"{name}:{key}")
        assert not list(killed.glob(".*.tmp"))

        # The 2-process checkpoint continues in one process with the same global batch.
        one = tmp_path / "one"
        common = dict(OPTIONS, val_split=sample.test_split, resume=True)
        with pytest.raises(ConfigError, match="global_batch 4 -> 2"):
            run(train_config(sample, store, one, batch_size=2, **common))
        run(train_config(sample, store, one, batch_size=2, accumulate=2, **common))
        assert max(relative_differences(steps(one, "loss"), steps(whole, "loss"))) < 1e-6
        assert steps(one, "lr") == steps(whole, "lr")
