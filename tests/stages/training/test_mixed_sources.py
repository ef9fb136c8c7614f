"""train-student --unlabelled: the labelled split plus groups of image sources, a share of every batch."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from support.commands import TEACHER, tiekd_command, train_args
from support.runs import assert_same, kill_after_steps

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.training.log import read_jsonl
from tiekd.stages.training.mixture import MixedEpochSampler, source_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def keys(sampler) -> list:
    return list(iter(sampler))


def test_every_global_batch_holds_each_sources_share_for_any_processes():
    counts = source_counts([1.0, 0.25, 0.25], 8)
    assert counts == [4, 2, 2]
    one = keys(MixedEpochSampler([10, 7, 9], counts, seed=3, start_step=0, total_steps=5, per_process=8))
    two = [keys(MixedEpochSampler([10, 7, 9], counts, seed=3, start_step=0, total_steps=5, per_process=4, rank=r))
           for r in range(2)]  # fmt: skip
    assert [k for step in range(5) for r in range(2) for k in two[r][4 * step : 4 * step + 4]] == one
    for step in range(5):
        batch = one[8 * step : 8 * step + 8]
        assert [sum(1 for _, s, _ in batch if s == source) for source in range(3)] == counts
    assert [e for e, _, _ in one] == [0] * 8 * 2 + [1] * 8 * 2 + [2] * 8  # 2 steps an epoch: the split's 10 frames, 4 a step
    resumed = keys(MixedEpochSampler([10, 7, 9], counts, seed=3, start_step=3, total_steps=5, per_process=8))
    assert resumed == one[8 * 3 :]


@pytest.fixture(scope="module")
def mixed_store(sample, tmp_path_factory):
    """The toy teacher over the sample's train split and over 4 more images (group 'extra', cropped to fit)."""
    from click.testing import CliRunner

    from tiekd.cli import main

    folder = tmp_path_factory.mktemp("mixed")
    images = folder / "images"
    images.mkdir()
    for k, line in enumerate(sample.test_split.read_text().splitlines()):
        shutil.copy(sample.data_root / line.split()[0], images / f"{k}.png")
    common = ["--teacher", TEACHER, "--out", folder / "s.zarr", "--name", "t", "--teacher-input", "88x304",
              "--workers", "0"]  # fmt: skip
    for extra in (["--data-root", sample.data_root, "--split", sample.train_split],
                  ["--images", images, "--fit", "crop", "--split-name", "extra"]):  # fmt: skip
        result = CliRunner().invoke(main, ["cache-teacher", *map(str, common + extra)])
        assert result.exit_code == 0, result.output
    return folder / "s.zarr"


@pytest.mark.slow
def test_a_mixed_run_killed_and_resumed_equals_the_uninterrupted_one(
    sample, mixed_store, tmp_path, cli, subprocess_env
):
    extra = ("--epochs", 2, "--save-every", 1, "--unlabelled", "extra=0.5")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = [a for a in train_args(sample, mixed_store, whole, *extra) if a not in ("--gt-root", sample.gt_root)]
    assert cli(*args).exit_code == 0
    written = json.loads((whole / "run.json").read_text())
    assert written["unlabelled"] == ["extra=0.5"] and written["steps_per_epoch"] == 4  # 4 extra frames, 1 a step
    killed_args = [killed if a == whole else a for a in args]
    process = subprocess.Popen(tiekd_command(*killed_args), env=subprocess_env | {"OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    kill_after_steps(process, killed)
    assert 2 <= load_checkpoint(killed / "last.pt")["step"] < 8, "the kill must land mid-run"
    assert cli(*killed_args, "--resume").exit_code == 0
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(killed / "last.pt")
    for key in ("model", "optimizer", "scheduler", "step"):
        assert_same(a[key], b[key], key)
    timing = ("step_seconds", "data_seconds")
    assert [{k: v for k, v in s.items() if k not in timing} for s in read_jsonl(whole / "steps.jsonl")] == [
        {k: v for k, v in s.items() if k not in timing} for s in read_jsonl(killed / "steps.jsonl")
    ]


def test_the_unlabelled_groups_are_watched_before_each_step(sample, mixed_store, tmp_path, cli):
    """The loop checks each group a run reads before a step: an --unlabelled group cached again under
    the run (another teacher) stops it, as a replaced split group does."""
    from support.runs import train_config

    from tiekd.pipeline.errors import StoreError
    from tiekd.stages.train_student import watched_groups

    store = tmp_path / "s.zarr"
    shutil.copytree(mixed_store, store)
    cfg = train_config(sample, store, tmp_path / "run", teacher="t", unlabelled=("extra=0.5",))
    groups = watched_groups(cfg, (str(store), "t", "train"))
    assert [g.location for g in groups] == [f"{store}/t/train", f"{store}/t/extra"]
    images = [str(p) for p in sorted((mixed_store.parent / "images").iterdir())]
    again = ["cache-teacher", "--teacher", TEACHER, "--teacher-arg", "seed=1", "--out", store, "--name", "t",
             "--teacher-input", "88x304", "--workers", "0", "--images", *images[:1], "--images", *images[1:2],
             "--fit", "crop", "--split-name", "extra", "--overwrite"]  # fmt: skip
    assert cli(*again).exit_code == 0
    groups[0].require_unchanged()
    with pytest.raises(StoreError, match="t/extra was (replaced|removed) while in use"):
        groups[1].require_unchanged()


def test_a_packed_unlabelled_group_trains_without_its_files_as_from_them(sample, mixed_store, tmp_path, cli):
    """``cache pack --images`` of the 'extra' group's images: the mixed run reads them from the store
    (and watches the packed split), step for step as it reads the files."""
    from support.runs import train_config

    from tiekd.stages.train_student import watched_groups

    store, images = tmp_path / "s.zarr", mixed_store.parent / "images"
    shutil.copytree(mixed_store, store)
    packed = cli("cache", "pack", "--images", images, "--fit", "crop", "--split-name", "extra", "--out", store)
    assert packed.exit_code == 0, packed.output
    cfg = train_config(sample, store, tmp_path / "run", teacher="t", unlabelled=("extra=0.5",))
    groups = watched_groups(cfg, (str(store), "t", "train"))
    assert [g.location for g in groups] == [f"{store}/t/train", f"{store}/t/extra", f"{store}/_inputs/extra"]

    def mixed_run(source, out):
        args = [a for a in train_args(sample, source, out, "--max-steps", 3, "--unlabelled", "extra=0.5")
                if a not in ("--gt-root", sample.gt_root)]  # fmt: skip
        result = cli(*args)
        assert result.exit_code == 0, result.output
        timing = ("step_seconds", "data_seconds")
        return [{k: v for k, v in s.items() if k not in timing} for s in read_jsonl(out / "steps.jsonl")]

    from_files = mixed_run(mixed_store, tmp_path / "files")
    shutil.move(images, tmp_path / "away")
    try:
        from_store = mixed_run(store, tmp_path / "packed")
    finally:
        shutil.move(tmp_path / "away", images)
    assert from_store == from_files and len(from_files) == 3
