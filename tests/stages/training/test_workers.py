"""DataLoader worker processes (--workers > 0) change nothing but speed: the (seed, epoch) data order,
the samples, and resume after kill -9 are those of --workers 0."""

import subprocess

import pytest
from support.commands import tiekd_command, train_args
from support.runs import assert_same, build, kill_after_steps, train_config

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.runtime import default_workers
from tiekd.stages.training.log import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMING = ("step_seconds", "data_seconds")


def batches(cfg, start_step=0) -> list[dict]:
    trainer, _ = build(cfg)
    trainer.step = start_step
    from tiekd.stages.train_student import make_loader, prepare

    records, cache_ref = prepare(cfg)
    return [{k: v for k, v in batch.items() if k != "error"} for batch in make_loader(cfg, records, cache_ref, trainer)]


def test_workers_give_the_batches_of_the_training_process(sample, store, tmp_path):
    cfg = dict(max_steps=6, epochs=2, method="tiekd", gt_root=sample.gt_root)
    alone = batches(train_config(sample, store, tmp_path / "a", workers=0, **cfg))
    forked = batches(train_config(sample, store, tmp_path / "b", workers=2, **cfg))
    assert len(alone) == 6
    assert_same(alone, forked)
    resumed = batches(train_config(sample, store, tmp_path / "c", workers=2, **cfg), start_step=3)
    assert_same(alone[3:], resumed)  # the data side of an exact resume


def test_the_default_shares_the_cores_among_torchrun_processes(monkeypatch):
    monkeypatch.setattr("tiekd.stages.runtime.usable_cores", lambda: 32)
    assert default_workers() == 8  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 6  # 8 cores each, 2 for the step
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_workers() == 0  # 2 cores each: the step's


@pytest.mark.slow
def test_kill_9_then_resume_with_workers_equals_uninterrupted(sample, store, tmp_path, cli, subprocess_env):
    extra = ("--epochs", 2, "--save-every", 1, "--workers", 2)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli(*train_args(sample, store, whole, *extra)).exit_code == 0
    process = subprocess.Popen(tiekd_command(*train_args(sample, store, killed, *extra)),
                               env=subprocess_env | {"OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)  # fmt: skip
    kill_after_steps(process, killed)
    assert 2 <= load_checkpoint(killed / "last.pt")["step"] < 8, "the kill must land mid-run"
    result = cli(*train_args(sample, store, killed, *extra, "--resume"))
    assert result.exit_code == 0, result.output
    assert_same(load_checkpoint(whole / "last.pt")["model"], load_checkpoint(killed / "last.pt")["model"])
    assert [{k: v for k, v in s.items() if k not in TIMING} for s in read_jsonl(whole / "steps.jsonl")] == [
        {k: v for k, v in s.items() if k not in TIMING} for s in read_jsonl(killed / "steps.jsonl")
    ]
