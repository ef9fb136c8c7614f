"""The leakage guard: evaluation images refused at stage one and at training, unless allowed (recorded)."""

from __future__ import annotations

import json
import shutil

import pytest
from support.commands import TEACHER, error_line, train_args

from tiekd.data.leakage import EvaluationSplit
from tiekd.data.registry import get_dataset
from tiekd.pipeline.store.cache import TeacherCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def split_drives(split) -> set[str]:
    """The drives of a KITTI split, read independently: the second folder of each image path."""
    return {line.split()[0].split("/")[1] for line in split.read_text().splitlines() if line.strip()}


def test_the_drives_come_from_the_split_file(sample):
    guard = EvaluationSplit.read(sample.test_split, sample.data_root, get_dataset("kitti"))
    assert guard.drives == split_drives(sample.test_split) and len(guard.hashes) == 4


def cache_images(cli, sample, tmp_path, folder, *extra):
    return cli("cache-teacher", "--teacher", TEACHER, "--images", folder, "--fit", "crop", "--out", tmp_path / "s.zarr",
               "--teacher-input", "88x304", "--workers", "0", "--test-split", sample.test_split,
               "--test-data-root", sample.data_root, *extra)  # fmt: skip


def test_a_copy_of_a_test_image_is_refused_at_stage_one_unless_allowed(cli, sample, tmp_path):
    first_test = sample.test_split.read_text().split()[0]
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(sample.data_root / first_test, folder / "renamed.png")
    shutil.copy(sample.data_root / sample.train_split.read_text().split()[0], folder / "fine.png")
    line = error_line(cache_images(cli, sample, tmp_path, folder))
    assert f"1 of the 2 frames are images of the evaluation split {sample.test_split}" in line
    assert f"{folder / 'renamed.png'}, same content as {first_test}" in line and "--allow-leakage" in line
    assert not (tmp_path / "s.zarr").exists()  # refused before the store was touched
    assert cache_images(cli, sample, tmp_path, folder, "--allow-leakage").exit_code == 0
    guard = TeacherCache.open(tmp_path / "s.zarr").attrs["leakage_guard"]
    assert (guard["leaking_frames"], guard["allowed"], guard["first"]) == (1, True, str(folder / "renamed.png"))


def test_an_image_of_a_test_drive_is_refused(cli, sample, tmp_path):
    drive = sorted(split_drives(sample.test_split))[0]
    folder = tmp_path / "copy" / drive
    folder.mkdir(parents=True)
    other = sample.train_split.read_text().split()[0]
    shutil.copy(sample.data_root / other, folder / "x.png")  # another picture, but from a test drive
    line = error_line(cache_images(cli, sample, tmp_path, tmp_path / "copy"))
    assert f"from its drive {drive}" in line


def test_training_is_guarded_and_run_json_says_so(cli, sample, tmp_path):
    store = tmp_path / "s.zarr"
    assert cli("cache-teacher", "--teacher", TEACHER, "--data-root", sample.data_root, "--split", sample.train_split,
               "--out", store, "--workers", "0", "--teacher-input", "88x304").exit_code == 0  # fmt: skip
    guard = ["--test-split", sample.train_split]  # the training split itself: every frame leaks
    line = error_line(cli(*train_args(sample, store, tmp_path / "a", "--max-steps", "1", *guard)))
    assert "8 of the 8 training frames are images of the evaluation split" in line
    result = cli(*train_args(sample, store, tmp_path / "b", "--max-steps", "1", *guard, "--allow-leakage"))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "b" / "run.json").read_text())["leakage_guard"]
    assert (recorded["leaking_frames"], recorded["allowed"]) == (8, True)
    result = cli(*train_args(sample, store, tmp_path / "c", "--max-steps", "1", "--test-split", sample.test_split))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "c" / "run.json").read_text())["leakage_guard"]
    assert (recorded["leaking_frames"], recorded["allowed"]) == (0, False)
