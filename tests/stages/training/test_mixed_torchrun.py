"""A mixed labelled + unlabelled run under torchrun, for real: 2 CPU processes with gloo.

The global batch of 4 is the split's 2 frames then the unlabelled group's 2 (``--unlabelled
unlabelled=0.5``), and process ``rank`` takes its slice of it (stages/training/mixture.py): 2
processes of batch 2 see, step by step, the micro-batches one process of batch 2 accumulating 2
sees, so their losses, gradients and weights are the same up to the order of float sums
(tests/stages/training/test_distributed.py says why the options below keep that noise small).
The unlabelled frames are ``sample-data --unlabelled`` images, cached by the toy teacher.
"""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from support.commands import TEACHER, train_args
from support.runs import train_config, write_train_store

from tiekd.cli import main
from tiekd.data.sample.kitti import write_sample_dataset
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.train_student import run
from tiekd.stages.training.log import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

OPTIONS = ["--dpm-form", "paper", "--no-rotate-teacher", "--lr", 1e-3, "--epochs", 2, "--unlabelled", "unlabelled=0.5"]
"""8 split frames and 4 unlabelled, 2 of each a step: 2 steps an epoch, 4 steps."""
SECONDS = 240
"""Limit for the torchrun command on a busy 2-core machine (takes about 20 s)."""


@pytest.fixture(scope="module")
def mixed_store(sample, tmp_path_factory):
    """The toy teacher over the sample's train split and over 4 ``sample-data --unlabelled`` images."""
    root = tmp_path_factory.mktemp("mixed_ddp")
    extra = write_sample_dataset(root / "sample", n_train=1, n_test=2, n_unlabelled=4)
    store = write_train_store(sample, root / "s.zarr")
    args = ["cache-teacher", "--teacher", TEACHER, "--out", root / "s.zarr", "--name", "row_prior",
            "--teacher-input", "88x304", "--workers", "0", "--images", extra.unlabelled, "--fit", "crop"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return store


def _no_gt(args: list) -> list:
    at = args.index("--gt-root")
    return args[:at] + args[at + 2 :]


def test_two_processes_equal_one_process_accumulating(sample, mixed_store, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(train_config(sample, mixed_store, one, gt_root=None, accumulate=2, dpm_form="paper", rotate_teacher=False,
                     lr=1e-3, epochs=2, unlabelled=("unlabelled=0.5",)))  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tiekd"]
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    command = launcher + [str(a) for a in _no_gt(train_args(sample, mixed_store, two, *OPTIONS))]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((two / "run.json").read_text())
    assert (written["processes"], written["global_batch"], written["steps_per_epoch"]) == (2, 4, 2)
    assert written["unlabelled"] == ["unlabelled=0.5"]
    a, b = read_jsonl(one / "steps.jsonl"), read_jsonl(two / "steps.jsonl")
    assert [s["step"] for s in a] == [s["step"] for s in b] == [1, 2, 3, 4]
    for key, tolerance in (("loss", 1e-6), ("grad_norm", 1e-5)):
        assert max(abs(x[key] - y[key]) / abs(x[key]) for x, y in zip(a, b)) < tolerance, key
    assert a[-1]["loss"] != a[0]["loss"]
    ours, theirs = load_checkpoint(one / "last.pt")["model"], load_checkpoint(two / "last.pt")["model"]
    weights = [k for k in ours if ours[k].is_floating_point() and "running_" not in k]
    assert sum(float((ours[k].double() - theirs[k].double()).pow(2).sum()) for k in weights) ** 0.5 < 1e-4
