"""Command lines of the tiny runs the tests make, and the one-line error they expect."""

from __future__ import annotations

import sys

TEACHER = "python:toy_teachers:row_prior"
"""The toy KITTI teacher (tests/toy_teachers.py)."""
STUDENT = "test_resnet"
"""timm's test encoder (2.2 M parameters): any timm ``features_only`` encoder is a valid student."""
SCALE = 0.0625
"""Students train at 1/16 of the crop: 352x704 crops at 22x44, evaluation at 22x76."""


def error_line(result) -> str:
    """The single 'Error: ...' line of a failed command; fails on tracebacks or extra error text."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def tiekd_command(*args) -> list[str]:
    """``python -m tiekd.cli ARGS`` for a subprocess (environment: the ``subprocess_env`` fixture)."""
    return [sys.executable, "-m", "tiekd.cli", *map(str, args)]


def cache_args(sample, out, split=None, *extra) -> list:
    """``tiekd cache-teacher`` of the toy teacher over a split of the sample (train by default)."""
    return [
        "cache-teacher",
        "--teacher",
        TEACHER,
        "--data-root",
        sample.data_root,
        "--split",
        split or sample.train_split,
        "--out",
        out,
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--frames-per-shard",
        "2",
        *extra,
    ]


def train_args(sample, store, out, *extra) -> list:
    """``tiekd train-student`` of the test student on the sample's train split, from ``store``."""
    return [
        "train-student",
        "--cache",
        store,
        "--split-name",
        "train",
        "--data-root",
        sample.data_root,
        "--gt-root",
        sample.gt_root,
        "--split",
        sample.train_split,
        "--student",
        STUDENT,
        "--no-pretrained",
        "--out",
        out,
        "--scale",
        SCALE,
        "--batch-size",
        2,
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    ]


def evaluate_args(sample, *extra) -> list:
    """``tiekd evaluate`` on the sample's test split (the model or store comes in ``extra``)."""
    return [
        "evaluate",
        "--data-root",
        sample.data_root,
        "--gt-root",
        sample.gt_root,
        "--split",
        sample.test_split,
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    ]
