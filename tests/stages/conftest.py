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
