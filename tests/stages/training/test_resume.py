"""Resume after kill -9: the resumed run equals the uninterrupted one, checkpoint for checkpoint
and log line for log line (timings aside), and the killed run's half-written checkpoint goes."""

import subprocess

import pytest
from support.commands import tiekd_command, train_args
from support.runs import assert_same, kill_after_steps

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.training.log import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TestResume:
    @pytest.mark.slow
    def test_kill_9_then_resume_equals_uninterrupted(self, sample, store, tmp_path, cli, subprocess_env):
        extra = ("--epochs", 3, "--save-every", 1, "--val-split", sample.test_split)
        whole, killed = tmp_path / "whole", tmp_path / "killed"
        assert cli(*train_args(sample, store, whole, *extra)).exit_code == 0
        env = subprocess_env | {"OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            tiekd_command(*train_args(sample, store, killed, *extra)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_after_steps(process, killed)
        reached = load_checkpoint(killed / "last.pt")["step"]
        assert 2 <= reached < 12, "the kill must land mid-run"
        (killed / ".last.pt.left_by_a_kill.tmp").write_bytes(b"half a checkpoint")
        result = cli(*train_args(sample, store, killed, *extra, "--resume"))
        assert result.exit_code == 0, result.output
        assert "trained 12 steps" in result.output

        for name, resumable in (("last.pt", ("optimizer", "scheduler", "scaler")), ("best.pt", ())):
            a, b = load_checkpoint(whole / name), load_checkpoint(killed / name)
            for key in ("model", "step", "epoch", "architecture", "best", *resumable):
                assert_same(a[key], b[key], f"{name}:{key}")
        timing = ("step_seconds", "data_seconds")
        assert [{k: v for k, v in s.items() if k not in timing} for s in read_jsonl(whole / "steps.jsonl")] == [
            {k: v for k, v in s.items() if k not in timing} for s in read_jsonl(killed / "steps.jsonl")
        ]
        assert read_jsonl(whole / "epochs.jsonl") == read_jsonl(killed / "epochs.jsonl")
        assert not list(killed.glob(".*.tmp")), "the killed run's temporary checkpoint was not removed"
