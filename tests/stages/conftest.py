"""Fixtures of the stage tests: the train store and a finished run (module-scoped, as runs are)."""

import pytest
from support.runs import train_config, write_train_store

from tiekd.stages.train_student import run


@pytest.fixture(scope="module")
def store(sample, tmp_path_factory):
    """The toy teacher cached over the sample's train and test splits (one store, two groups)."""
    return write_train_store(sample, tmp_path_factory.mktemp("store") / "s.zarr")


@pytest.fixture(scope="module")
def run_dir(sample, store, tmp_path_factory):
    """A finished TIE-KD run: 2 epochs of 4 steps, validated on the test split after each."""
    out = tmp_path_factory.mktemp("runs") / "tiekd"
    run(train_config(sample, store, out, epochs=2, val_split=sample.test_split, save_every=1))
    return out


@pytest.fixture(scope="module")
def compared_runs(sample, store, run_dir, tmp_path_factory):
    """Three finished runs to compare: ``run_dir`` (seed 0), the same with seed 1, and seed 0 with
    --lr 2e-3; the two seeds are evaluated on the test split with ``evaluate --json test.json``."""
    from tiekd.stages.evaluate import EvaluateConfig
    from tiekd.stages.evaluate import run as evaluate

    root = tmp_path_factory.mktemp("compared")
    common = {"epochs": 2, "val_split": sample.test_split, "save_every": 1}
    runs = [run_dir, root / "seed1", root / "lr2e-3"]
    run(train_config(sample, store, runs[1], seed=1, **common))
    run(train_config(sample, store, runs[2], lr=2e-3, **common))
    for folder in runs[:2]:
        evaluate(
            EvaluateConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=sample.test_split,
                           checkpoint=folder / "best.pt", json_out=folder / "test.json", workers=0, device="cpu")
        )  # fmt: skip
    return runs
