"""Runs from a packed store equal the runs from the files: training step for step (steps.jsonl and
weights), validation, evaluation and explanation; and the one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from support.commands import error_line
from support.runs import assert_same, train_config

from tiekd.stages.pack_inputs import PackConfig
from tiekd.stages.pack_inputs import run as pack
from tiekd.stages.train_student import run as train

TIMING = ("step_seconds", "data_seconds")


@pytest.fixture(scope="module")
def packed(sample, store):
    """The sample's train and test splits packed (with GT) into the teacher store."""
    for split in (sample.train_split, sample.test_split):
        pack(PackConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=split, out=str(store),
                        frames_per_shard=2))  # fmt: skip
    return store


def _steps(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def runs(sample, packed, tmp_path_factory, one_torch_thread):
    """Method -> folder of two runs of 3 steps, validated: ``files`` from the files, ``packed`` from the store."""
    folders = {}
    for method in ("tiekd", "supervised"):
        folders[method] = tmp_path = tmp_path_factory.mktemp(method)
        options = dict(max_steps=3, val_split=sample.test_split, method=method, save_every=1)
        train(train_config(sample, packed, tmp_path / "files", **options))
        train(train_config(sample, packed, tmp_path / "packed", data_root=None, gt_root=None, **options))
    return folders


@pytest.mark.parametrize("method", ["tiekd", "supervised"])
def test_training_from_the_packed_store_equals_training_from_the_files(runs, method):
    tmp_path = runs[method]
    assert _steps(tmp_path / "files") == _steps(tmp_path / "packed")
    epochs = [(tmp_path / run / "epochs.jsonl").read_text() for run in ("files", "packed")]
    assert epochs[0] == epochs[1] and '"val"' in epochs[0]
    weights = [torch.load(tmp_path / run / "last.pt", weights_only=True)["model"] for run in ("files", "packed")]
    assert_same(*weights)


def test_evaluation_from_the_packed_store_equals_evaluation_from_the_files(cli, sample, packed, tmp_path):
    common = ("evaluate", "--cache", packed, "--split", sample.test_split, "--workers", 0, "--device", "cpu")
    files = cli(*common, "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--json", tmp_path / "f.json")
    from_store = cli(*common, "--json", tmp_path / "p.json")
    assert files.exit_code == 0 and from_store.exit_code == 0, from_store.output
    results = [json.loads((tmp_path / name).read_text()) for name in ("f.json", "p.json")]
    assert results[0]["metrics"] == results[1]["metrics"] and results[0]["per_image"] == results[1]["per_image"]


def test_without_data_root_or_a_store_is_one_line(cli, sample, tmp_path):
    result = cli("train-student", "--split", sample.train_split, "--out", tmp_path / "r", "--method", "supervised",
                 "--device", "cpu")  # fmt: skip
    assert "pass --data-root" in error_line(result)


def test_a_store_without_the_split_packed_is_one_line(cli, sample, tmp_path, test_split_store):
    result = cli("evaluate", "--cache", test_split_store, "--split", sample.test_split, "--device", "cpu")
    assert "holds no packed inputs of split 'test'" in error_line(result)


def test_explanation_from_the_packed_store_equals_explanation_from_the_files(sample, packed, runs, tmp_path):
    from tiekd.stages.explain import ExplainConfig
    from tiekd.stages.explain import run as explain

    common = dict(checkpoint=runs["tiekd"] / "packed" / "last.pt", split=sample.test_split, cache=str(packed),
                  images=1, device="cpu")  # fmt: skip
    files = explain(ExplainConfig(data_root=sample.data_root, gt_root=sample.gt_root, out=tmp_path / "f", **common))
    from_store = explain(ExplainConfig(data_root=None, gt_root=None, out=tmp_path / "p", **common))
    assert files.scores == from_store.scores and len(from_store.figures) == len(files.figures) > 0
