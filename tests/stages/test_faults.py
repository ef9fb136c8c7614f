"""What a hostile user does to train-student and evaluate (issue 9, cases 3, 7, 13, 14): each fault
ends in exactly one line on stderr and exit status 1, before the work where it can be foreseen, and
what was stored stays as it was.

Runs are as tiny as in test_train_student: ``test_resnet`` at 1/16 scale, batch 2, one thread.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.mounts import assert_unwritable, read_only_folder, tmpfs

from tiekd.cli import main
from tiekd.data.kitti import read_depth, write_depth
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.errors import OutOfMemory, out_of_memory

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAGE = os.sysconf("SC_PAGE_SIZE")
"""A one-page tmpfs holds empty files only."""
EXTRA_GT_ROWS = 5
"""A GT of another size: this many rows taller than its image (the KB crop then misaligns by as many)."""


def only_error(result) -> str:
    """The one line a failed command printed on stderr (and nothing else there)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def train_args(sample, out, *extra, gt_root=None, method="supervised"):
    return [
        "train-student",
        "--method",
        method,
        "--data-root",
        sample.data_root,
        "--gt-root",
        gt_root or sample.gt_root,
        "--split",
        sample.train_split,
        "--student",
        "test_resnet",
        "--no-pretrained",
        "--out",
        out,
        "--scale",
        0.0625,
        "--batch-size",
        2,
        "--workers",
        0,
        "--device",
        "cpu",
        *extra,
    ]


class TestTrainStudent:
    def test_gt_of_another_size_than_its_image(self, sample, tmp_path, cli):
        # Case 7: evaluate refused this; training cropped both from their own bottom rows and trained
        # on GT misaligned by EXTRA_GT_ROWS rows.
        gt_root = tmp_path / "gt"
        shutil.copytree(sample.gt_root, gt_root)
        for path in gt_root.rglob("*.png"):
            depth = read_depth(path)
            write_depth(path, np.pad(depth, ((EXTRA_GT_ROWS, 0), (0, 0))))
        line = only_error(cli(*train_args(sample, tmp_path / "run", "--max-steps", 1, gt_root=gt_root)))
        assert line.startswith("Error: GT ") and " but its image is " in line
        assert not (tmp_path / "run" / "last.pt").exists()

    def test_a_crop_without_lidar_rows_says_so(self, sample, tmp_path, cli):
        # Case 14: the sample's LiDAR starts at row 113 of the KB crop; a 96-row crop holds none. The
        # loss was NaN and the message sent the user to a cache supervised training does not use.
        # Without --loss-top-row too: supervised training has no top row, yet KITTI's default (110) was blamed.
        for extra in ((), ("--loss-top-row", 0)):
            line = only_error(cli(*train_args(sample, tmp_path, "--max-steps", 1, "--crop", "96x704", *extra)))
            assert "of every image in this batch holds no GT depth" in line and "cache" not in line
            assert "loss-top-row" not in line and "loss top row" not in line

    def test_a_crop_above_the_default_loss_top_row_names_the_dataset_default(self, sample, store, tmp_path, cli):
        args = train_args(sample, tmp_path, "--crop", "96x704", "--cache", store, method="tiekd")
        line = only_error(cli(*args))
        assert line.startswith("Error: the kitti loss top row 110 (its default --loss-top-row: no LiDAR above it)")

    def test_read_only_out_before_any_work(self, sample, tmp_path, cli):
        with read_only_folder(tmp_path / "ro") as folder:
            assert_unwritable(folder)
            result = cli(*train_args(sample, folder / "run", "--max-steps", 1))
            line = only_error(result)
        assert line.startswith(f"Error: --out {folder / 'run'} cannot be written (")
        assert "training" not in result.stdout

    def test_disk_full_during_a_checkpoint_save(self, sample, tmp_path, cli):
        # A checkpoint of this run is 26 MB: a 40 MB disk holds one, not the next one written beside it.
        with tmpfs(tmp_path / "disk", size_bytes=40 << 20) as disk:
            out = disk / "run"
            line = only_error(cli(*train_args(sample, out, "--max-steps", 3, "--save-every", 1)))
            assert line == (
                f"Error: cannot write checkpoint {out / 'last.pt'} (No space left on device); the previous last.pt "
                "is intact; free space or fix the folder, then --resume"
            )
            assert load_checkpoint(out / "last.pt")["step"] == 1
            assert not list(out.glob(".*.tmp")), "the failed save left its temporary file"

    def test_absurd_n_bins_is_bounded(self, sample, store, tmp_path, cli):
        # 1e8 bins: a 51 GB output convolution, then a DPM of 1e8 maps; refused before anything is built.
        args = train_args(sample, tmp_path, "--n-bins", 100_000_000, "--cache", store, method="tiekd")
        assert only_error(cli(*args)) == "Error: --n-bins 100000000 must be in [2, 4096] (default 257)"


class TestResumeWithAnotherCache:
    def test_another_teacher_is_refused_a_moved_store_is_not(self, sample, store, tmp_path, cli):
        # Case 3: the run's options named the store by path only, and --resume mixed a second teacher
        # into the run. The same toy teacher with another seed has other weights (another SHA-256),
        # and sits in groups of the same names: only the cache identity tells the two apart.
        other = tmp_path / "other.zarr"
        cache_toy_teacher(sample, other, sample.train_split, "--teacher-arg", "seed=1")
        moved = tmp_path / "moved.zarr"
        shutil.copytree(store, moved)
        out = tmp_path / "run"

        def train(cache, *resume):
            return cli(*train_args(sample, out, "--epochs", 1, "--cache", cache, *resume, method="res-mse"))

        assert train(store).exit_code == 0
        identity = load_checkpoint(out / "last.pt")["cache"]
        assert identity["group"] == "row_prior/train" and len(identity["teacher_sha256"]) == 64
        assert json.loads((out / "run.json").read_text())["cache_identity"] == identity

        line = only_error(train(other, "--resume"))
        assert line.startswith(f"Error: --resume with another teacher cache than the run in {out} (teacher_sha256: ")
        assert "split_sha256" not in line and "group" not in line
        again = train(moved, "--resume")
        assert again.exit_code == 0 and "has already taken its 4 steps" in again.output, again.output


class TestEvaluate:
    def test_read_only_save_images_before_the_work(self, sample, tmp_path, cli, store):
        with read_only_folder(tmp_path / "ro") as folder:
            assert_unwritable(folder)
            args = ["evaluate", "--cache", store, "--data-root", sample.data_root, "--gt-root", sample.gt_root]
            args += ["--split", sample.test_split, "--device", "cpu", "--workers", 0]
            result = cli(*args, "--save-images", folder / "pictures")
            line = only_error(result)
        assert line.startswith(f"Error: --save-images {folder / 'pictures'} cannot be written (")
        assert "evaluating" not in result.stdout

    def test_a_full_disk_while_saving_pictures(self, sample, tmp_path, cli, store):
        with tmpfs(tmp_path / "disk", size_bytes=PAGE) as disk:
            args = ["evaluate", "--cache", store, "--data-root", sample.data_root, "--gt-root", sample.gt_root]
            args += ["--split", sample.test_split, "--device", "cpu", "--workers", 0]
            line = only_error(cli(*args, "--save-images", disk / "pictures"))
        assert line.startswith(f"Error: cannot write {disk / 'pictures'}/") and "(No space left on device)" in line


class TestAllocationFailures:
    @pytest.mark.parametrize(
        "allocate, size",
        [(lambda: torch.empty(10**13), "37252.9 GiB"), (lambda: np.empty(10**13), "72.8 TiB")],
        ids=["torch", "numpy"],
    )
    def test_a_failed_allocation_is_one_line(self, allocate, size):
        # A real allocation, far beyond any machine: both libraries refuse it at once.
        with pytest.raises((RuntimeError, MemoryError)) as info:
            allocate()
        error = out_of_memory(info.value)
        assert isinstance(error, OutOfMemory) and "\n" not in error.message
        assert error.message.startswith(f"out of memory ({size} asked for at once): lower --batch-size")
        assert out_of_memory(RuntimeError("shapes do not match")) is None

    def test_the_advice_names_the_options_of_the_command_that_ran(self, sample, tmp_path, cli):
        # A real 112 GiB allocation: export's only size is --input; training's advice named it not.
        run_dir = tmp_path / "run"
        assert cli(*train_args(sample, run_dir, "--max-steps", 1)).exit_code == 0
        args = ["export", "--checkpoint", run_dir / "last.pt", "--out", tmp_path / "m.onnx", "--input", "200000x200000"]
        line = only_error(cli(*args))
        assert line == "Error: out of memory (447.0 GiB asked for at once): lower --input, or use a device with more memory"
        assert not (tmp_path / "m.onnx").exists()

    def test_a_checkpoint_claiming_absurd_bins_is_named_as_the_cause(self, sample, tmp_path, cli):
        run_dir = tmp_path / "run"
        assert cli(*train_args(sample, run_dir, "--max-steps", 1)).exit_code == 0
        state = torch.load(run_dir / "last.pt", weights_only=True)
        state["architecture"]["n_bins"] = 10**12
        torch.save(state, tmp_path / "bins.pt")
        line = only_error(cli("export", "--checkpoint", tmp_path / "bins.pt", "--out", tmp_path / "m.onnx"))
        assert "bins.pt claims a head of 1000000000000 depth bins, which tiekd never trains" in line

    def test_a_store_record_claiming_absurd_sizes_is_named_as_the_cause(self, store, tmp_path, cli):
        edited = tmp_path / "s.zarr"
        shutil.copytree(store, edited)
        record = edited / "row_prior" / "train" / "zarr.json"
        document = json.loads(record.read_text())
        document["attributes"]["n_frames"] = 10**12
        record.write_text(json.dumps(document))
        for command in (("info",), ("verify",), ("verify", "--repair")):
            result = cli("cache", *command, edited)
            assert "its record claims 1000000000000 frames of [352, 1216] pixels" in result.output, result.output
            assert "out of memory" not in result.output and "Traceback" not in result.output
        assert json.loads(record.read_text()) == document, "nothing rewritten from the damaged record"


def cache_toy_teacher(sample, path, split, *extra):
    """Cache the toy teacher of test_train_student over ``split`` into the store ``path``."""
    args = ["cache-teacher", "--teacher", "python:toy_teachers:row_prior", "--data-root", sample.data_root]
    args += ["--split", split, "--out", path, "--teacher-input", "88x304", "--workers", 0, "--device", "cpu"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, *extra]], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def store(sample, tmp_path_factory):
    """The toy teacher cached over the sample's train and test splits."""
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    for split in (sample.train_split, sample.test_split):
        cache_toy_teacher(sample, path, split)
    return path
