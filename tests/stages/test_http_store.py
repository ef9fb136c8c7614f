"""A store served over HTTP by a real local server: trained and evaluated from, read-only, through
fsspec, with the same results as from the folder itself; a server without byte ranges refused."""

import json
import shutil

import pytest
from support.commands import TEACHER, error_line, evaluate_args, tiekd_command
from support.http_server import (
    LostShardsHandler,
    NoListingHandler,
    NoSuffixRangeHandler,
    PlainHandler,
    serving,
)
from support.mounts import read_only_folder
from support.store_damage import BOUNDED_RSS, decompression_bomb, peak_rss

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


def test_a_server_without_suffix_ranges_is_refused_in_one_line(sample, folder, cli):
    # rangehttpserver passed the old probe (a range from the start), then every frame read failed.
    with serving(folder, NoSuffixRangeHandler) as base:
        line = error_line(cli(*evaluate_args(sample, "--cache", f"{base}/s.zarr", "--split-name", "test")))
    assert "refuses the byte ranges zarr reads with (HTTP 400)" in line


def test_a_server_without_listings_serves_commands_told_the_group(sample, folder, tmp_path, cli):
    # nginx's default (no autoindex): a 64-line traceback, even with --teacher and --split-name.
    with serving(folder, NoListingHandler) as base:
        url = f"{base}/s.zarr"
        told = cli(*evaluate_args(sample, "--cache", url, "--teacher", "row_prior", "--split-name", "test"))
        line = error_line(cli("cache", "info", url))
    local = cli(*evaluate_args(sample, "--cache", folder / "s.zarr", "--teacher", "row_prior", "--split-name", "test"))
    assert told.exit_code == 0 and told.output.splitlines()[-1] == local.output.splitlines()[-1], told.output
    assert "the server does not list its folders (HTTP 403); give --teacher and --split-name" in line


def test_a_lost_connection_is_not_called_damage(sample, folder, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("TIEKD_SHARD_CACHE", str(tmp_path / "shards"))
    for cache_gb in ("20", "0"):  # through the shard cache, and through zarr
        monkeypatch.setenv("TIEKD_SHARD_CACHE_GB", cache_gb)
        with serving(folder, LostShardsHandler) as base:
            url = f"{base}/s.zarr"
            lines = [error_line(cli(*evaluate_args(sample, "--cache", url, "--split-name", "test"))),
                     error_line(cli("cache", "verify", url))]  # fmt: skip
        for line in lines:
            assert "the connection to its server was lost" in line and "damaged" not in line.split("lost")[0], line


def test_an_unwritable_shard_cache_names_its_setting_not_damage(sample, folder, tmp_path, cli, monkeypatch):
    with read_only_folder(tmp_path / "ro") as read_only, serving(folder) as base:
        monkeypatch.setenv("TIEKD_SHARD_CACHE", str(read_only / "shards"))
        line = error_line(cli("cache", "verify", f"{base}/s.zarr"))
    assert f"the local shard cache {read_only / 'shards'} cannot be written (" in line and "TIEKD_SHARD_CACHE_GB=0" in line
    assert "damaged" not in line and "problem" not in line


def test_a_frame_that_claims_a_gibibyte_is_refused_without_decompressing_it(folder, tmp_path, subprocess_env):
    """A crafted frame, valid zstd and CRC32C, that inflates to 1 GiB: refused from the frame size
    the array defines, over HTTP as on disk (it peaked at 2.8 GB before)."""
    bombed = tmp_path / "served"
    shutil.copytree(folder, bombed)
    decompression_bomb(bombed / "s.zarr/row_prior/test/depth/c/0/0/0", frames_per_shard=32)
    env = dict(subprocess_env, TIEKD_SHARD_CACHE=str(tmp_path / "shards"))
    with serving(bombed) as base:
        for store in (f"{base}/s.zarr", bombed / "s.zarr"):
            done, peak = peak_rss(tiekd_command("cache", "verify", store), env)
            assert done.returncode == 1 and "Traceback" not in done.stdout, done.stdout
            assert "frame 0 of" in done.stdout and "does not decode" in done.stdout, done.stdout
            assert peak < BOUNDED_RSS, f"{store}: {peak / 2**30:.2f} GiB resident"
