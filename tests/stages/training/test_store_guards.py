"""Every store group a run reads stays the one it started with: each teacher of a --teacher-mix and the
packed split are checked before each training step (and the packed split before evaluation gives a
result); packed again, overwritten or removed, the run stops in one line. Mixture weights that are no
positive finite numbers are refused in one line."""

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from support.commands import TEACHER, error_line, tiekd_command

from tiekd.pipeline.errors import StoreError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pack_args(sample, store, split, *extra) -> list:
    return ["cache", "pack", "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--split", split,
            "--out", store, *extra]  # fmt: skip


def teacher_args(sample, store, name, *extra) -> list:
    return ["cache-teacher", "--teacher", TEACHER, "--data-root", sample.data_root, "--split", sample.train_split,
            "--out", store, "--name", name, "--teacher-input", "88x304", "--workers", "0", *extra]  # fmt: skip


def mix_args(sample, store, out, *extra) -> list:
    """train-student of a mixture of teachers a and b, the images and GT read from the packed split."""
    return ["train-student", "--cache", store, "--split", sample.train_split, "--student", "test_resnet",
            "--no-pretrained", "--out", out, "--scale", 0.0625, "--batch-size", 2, "--workers", 0, "--device", "cpu",
            "--teacher-mix", "a=1", "--teacher-mix", "b=2", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def store(sample, tmp_path_factory):
    """Teachers a and b over the train split, and the train and test splits packed, in one store (the tests
    that change a group change it into an equally valid one)."""
    from click.testing import CliRunner

    from tiekd.cli import main

    path = tmp_path_factory.mktemp("guards") / "s.zarr"
    for args in (teacher_args(sample, path, "a"), teacher_args(sample, path, "b", "--teacher-arg", "seed=1"),
                 pack_args(sample, path, sample.train_split), pack_args(sample, path, sample.test_split)):  # fmt: skip
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("weights", [("a=inf", "b=1"), ("a=1e308", "b=1e308"), ("a=nan", "b=1"), ("a=0", "b=1")])
def test_mixture_weights_that_are_no_positive_finite_numbers_are_one_line(sample, tmp_path, cli, weights):
    args = mix_args(sample, tmp_path / "s.zarr", tmp_path / "r")[:-4]
    line = error_line(cli(*args, "--teacher-mix", weights[0], "--teacher-mix", weights[1]))
    assert "a weight must be a positive finite number" in line or "sum to more than a float holds" in line


def wait_for_steps(out, n, process):
    deadline = time.monotonic() + 120
    while not (out / "steps.jsonl").is_file() or len((out / "steps.jsonl").read_text().splitlines()) < n:
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)


@pytest.mark.slow
def test_a_split_packed_again_under_a_running_mixture_stops_it(sample, store, tmp_path, cli, subprocess_env):
    """A real training process reading a mixture from a packed split; the split packed again under it."""
    out = tmp_path / "run"
    command = tiekd_command("--threads", 1, *mix_args(sample, store, out, "--epochs", 500))
    training = subprocess.Popen(command, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        wait_for_steps(out, 2, training)
        again = pack_args(sample, store, sample.train_split, "--frames-per-shard", 3, "--overwrite")
        assert cli(*again).exit_code == 0
        output = training.communicate(timeout=120)[0]
    finally:
        training.kill()
    assert training.returncode == 1 and "Traceback" not in output, output
    assert re.search(r"/_inputs/train was (packed again|removed) while in use", output), output


def test_each_teacher_of_a_mixture_is_watched(sample, store, tmp_path, cli):
    """The loop checks each group of watched_groups before a step (the test above, in a real process):
    the second teacher of the mixture is among them, and overwritten it stops the run."""
    from support.runs import train_config

    from tiekd.stages.train_student import watched_groups

    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    cfg = train_config(sample, copy, tmp_path / "run", data_root=None, gt_root=None, teacher_mix=("a=1", "b=2"))
    groups = watched_groups(cfg, (str(copy), "a", "train"))
    assert [g.location for g in groups[:2]] == [f"{copy}/a/train", f"{copy}/b/train"] and len(groups) == 3
    assert cli(*teacher_args(sample, copy, "b", "--teacher-arg", "seed=2", "--overwrite")).exit_code == 0
    groups[0].require_unchanged()
    with pytest.raises(StoreError, match=r"/b/train was (replaced|removed) while in use"):
        groups[1].require_unchanged()


def test_an_evaluation_of_a_split_packed_again_meanwhile_gives_no_result(sample, store, cli):
    from tiekd.data.registry import get_dataset
    from tiekd.stages.evaluation import evaluate
    from tiekd.stages.packed_inputs import evaluation_samples

    class Config:
        data_root = gt_root = inputs = split_name = None
        cache, split = str(store), sample.test_split

    dataset = get_dataset("kitti")
    samples = evaluation_samples(Config, dataset.read_split(sample.test_split), dataset, what="evaluation images")
    assert cli(*pack_args(sample, store, sample.test_split, "--frames-per-shard", 3, "--overwrite")).exit_code == 0

    def predict(images, ids):
        return torch.full((1, 1, *images.shape[-2:]), 10.0), None

    with pytest.raises(StoreError, match="_inputs/test was packed again while in use"):
        evaluate(predict, samples, show_progress=False)
    samples = evaluation_samples(Config, dataset.read_split(sample.test_split), dataset, what="evaluation images")
    assert np.isfinite(evaluate(predict, samples, show_progress=False).metrics["abs_rel"])


def test_a_split_packed_without_gt_or_with_a_record_without_gt_verifies_clean(sample, store, tmp_path, cli):
    # Its all-zero GT frames were never stored (zarr skips chunks of fill values): verify called them damaged.
    no_gt = tmp_path / "no_gt.zarr"
    args = [a for a in pack_args(sample, no_gt, sample.test_split) if a not in ("--gt-root", sample.gt_root)]
    assert cli(*args).exit_code == 0
    for path, frames in ((store, 28), (no_gt, 4)):  # teachers 8 + 8, packed 8 + 4; test record 1 has no GT
        result = cli("cache", "verify", path)
        assert result.exit_code == 0 and f"{frames} stored frames read, no problems" in result.output, result.output


def edit(path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def big_endian(document):
    document["codecs"][0]["configuration"]["codecs"][0]["configuration"]["endian"] = "big"


@pytest.mark.parametrize("tamper", ["gt byte order", "gt scale", "record not JSON"])
def test_tampered_packed_metadata_is_one_line_not_wrong_gt(tamper, sample, store, tmp_path, cli):
    # Both read every GT wrongly (byte order: 255 m instead of 79.6 m) while `cache verify` found no problem.
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    evaluation = ("evaluate", "--cache", copy, "--teacher", "a", "--split", sample.train_split, "--device", "cpu")
    assert cli(*evaluation).exit_code == 0
    if tamper == "gt byte order":
        edit(copy / "_inputs/train/gt/zarr.json", big_endian)
        assert "_inputs/train/gt/zarr.json is edited: its codecs differ" in error_line(cli("cache", "verify", copy))
    elif tamper == "gt scale":
        edit(copy / "_inputs/train/zarr.json", lambda document: document["attributes"].update(gt_scale=100))
    else:  # was a JSONDecodeError traceback from cache verify and cache info
        (copy / "_inputs/train/zarr.json").write_text("{not json")
        assert "_inputs/train/zarr.json is corrupt (JSONDecodeError" in error_line(cli("cache", "info", copy))
    refused = error_line(cli(*evaluation))
    assert re.search("gt/zarr.json is edited|records GT scale 100|train/zarr.json is corrupt", refused)
