"""A store served over HTTP by a real local server: trained and evaluated from, read-only, through
fsspec, with the same results as from the folder itself; a server without byte ranges refused."""

import json

import pytest
from support.commands import TEACHER, error_line, evaluate_args
from support.http_server import PlainHandler, serving

from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.cache_teacher import run as cache_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(sample, tmp_path_factory):
    """A folder holding a store of the toy teacher's maps of the sample's train and test splits."""
    folder = tmp_path_factory.mktemp("served")
    for split in (sample.train_split, sample.test_split):
        cache_run(CacheTeacherConfig(teacher=TEACHER, data_root=sample.data_root, split=split,
                                     out=str(folder / "s.zarr"), teacher_input=(88, 304), workers=0))
    return folder


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def evaluation(cli, sample, tmp_path, store, name):
    result = cli(*evaluate_args(sample, "--cache", store, "--split-name", "test", "--json", tmp_path / name))
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / name).read_text())


def training(cli, sample, tmp_path, store, name, workers):
    args = ["train-student", "--cache", store, "--split-name", "train", "--data-root", sample.data_root,
            "--split", sample.train_split, "--student", "test_resnet", "--no-pretrained", "--out", tmp_path / name,
            "--scale", 0.0625, "--batch-size", 2, "--max-steps", 2, "--workers", workers, "--device", "cpu"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["loss"] for line in (tmp_path / name / "steps.jsonl").read_text().splitlines()]


def test_evaluate_and_train_over_http_equal_the_local_store_and_never_write(sample, folder, tmp_path, cli):
    before = snapshot(folder)
    with serving(folder) as base:
        url = f"{base}/s.zarr"
        remote = evaluation(cli, sample, tmp_path, url, "remote.json")
        remote_losses = training(cli, sample, tmp_path, url, "remote", workers=2)  # forked loader workers
        info = json.loads(cli("cache", "info", url, "--json").output)
    local = evaluation(cli, sample, tmp_path, folder / "s.zarr", "local.json")
    assert remote["metrics"] == local["metrics"] and remote["per_image"] == local["per_image"]
    assert remote_losses == training(cli, sample, tmp_path, folder / "s.zarr", "local", workers=0)
    assert [(c["split"], c["complete"], c["bytes"]) for c in info["caches"]] == [("test", True, None),
                                                                                 ("train", True, None)]
    assert snapshot(folder) == before


def test_a_server_without_byte_ranges_is_refused_in_one_line(sample, folder, cli):
    with serving(folder, PlainHandler) as base:
        line = error_line(cli(*evaluate_args(sample, "--cache", f"{base}/s.zarr", "--split-name", "test")))
    assert "ignores HTTP Range requests" in line
