"""Tiny stores and runs built in-process, and exact comparisons of their results."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import torch

from support.commands import SCALE, STUDENT, TEACHER
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.cache_teacher import run as cache_run
from tiekd.stages.caching.config import CacheTeacherConfig
from tiekd.stages.train_student import build_trainer, make_loader, prepare
from tiekd.stages.training.config import TrainStudentConfig


def write_train_store(sample, path: Path) -> Path:
    """The toy teacher cached over the sample's train and test splits (one store, two groups)."""
    for split in (sample.train_split, sample.test_split):
        cache_run(
            CacheTeacherConfig(
                teacher=TEACHER,
                data_root=sample.data_root,
                split=split,
                out=str(path),
                teacher_input=(88, 304),
                workers=0,
                batch_size=4,
            )
        )
    return path


def train_config(sample, store, out, **changes) -> TrainStudentConfig:
    """The config of ``support.commands.train_args``, with ``changes``."""
    options = dict(
        data_root=sample.data_root,
        split=sample.train_split,
        out=out,
        cache=str(store),
        split_name="train",
        gt_root=sample.gt_root,
        student=STUDENT,
        scale=SCALE,
        batch_size=2,
        pretrained=False,
        workers=0,
        device="cpu",
    )
    return TrainStudentConfig(**(options | changes))


def build(cfg: TrainStudentConfig):
    """(trainer, loader) of a run, as ``run`` builds them."""
    records, cache_ref = prepare(cfg)
    trainer = build_trainer(cfg, len(records), torch.device(cfg.device))
    return trainer, make_loader(cfg, records, cache_ref, trainer)


def assert_same(a, b, where="state"):
    """Nested dicts/lists of tensors and plain values equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def store_arrays(path) -> dict:
    """depth, done and clipped of a store's only group, with its ids."""
    cache = TeacherCache.open(path)
    group = cache._group
    return {name: group[name][:] for name in ("depth", "done", "clipped")} | {"ids": cache.ids}


def assert_same_store(a, b):
    """Two stores hold the same frames, masks and ids, bit for bit."""
    left, right = store_arrays(a), store_arrays(b)
    assert left["ids"] == right["ids"]
    for name in ("depth", "done", "clipped"):
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def kill_after_steps(process, run_dir: Path, steps: int = 3, timeout: float = 240) -> None:
    """kill -9 a ``train-student`` subprocess once ``run_dir``'s steps.jsonl holds ``steps`` lines
    (or it ended, or ``timeout`` seconds passed), and wait for it."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
        log = run_dir / "steps.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
