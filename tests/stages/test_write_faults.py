"""Every command that writes, on a read-only folder and on a full disk (real tmpfs mounts): one
line naming the folder and what to do, exit status 1, no traceback, and a file already there intact."""

import os

import pytest
from support.commands import error_line
from support.mounts import assert_unwritable, read_only_folder, tmpfs
from support.runs import train_config

from tiekd.stages.train_student import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAGE = os.sysconf("SC_PAGE_SIZE")
SMALL_DISK = 64 << 10
"""Holds the old file below and nothing as large as an exported student (several MB)."""


@pytest.fixture(scope="module")
def checkpoint(sample, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(train_config(sample, store, out, max_steps=1))
    return out / "last.pt"


def commands(sample, checkpoint, folder):
    """Each writing command, with its output in ``folder``."""
    explain = ["explain", "--checkpoint", checkpoint, "--data-root", sample.data_root, "--gt-root", sample.gt_root]
    return {
        "export onnx": ["export", "--checkpoint", checkpoint, "--out", folder / "m.onnx"],
        "export checkpoint": ["export", "--checkpoint", checkpoint, "--out", folder / "m.pt", "--format", "checkpoint"],
        "explain": [*explain, "--split", sample.test_split, "--out", folder / "ex", "--device", "cpu", "--ids", "1"],
        "sample-data": ["sample-data", folder / "sd", "--train", 2, "--test", 2],
        "demo": ["demo", "--quick", "--out", folder / "demo"],
    }


@pytest.mark.parametrize("command", ["export onnx", "export checkpoint", "explain", "sample-data", "demo"])
def test_a_read_only_folder_is_refused_before_the_work(command, sample, checkpoint, tmp_path, cli):
    with read_only_folder(tmp_path / "ro") as folder:
        assert_unwritable(folder)
        line = error_line(cli(*commands(sample, checkpoint, folder)[command]))
    assert "cannot be written (Read-only file system); choose a writable folder" in line, line
    assert str(folder) in line


@pytest.mark.parametrize("command", ["export onnx", "export checkpoint", "sample-data", "demo"])
def test_a_full_disk_is_one_line_and_keeps_what_was_there(command, sample, checkpoint, tmp_path, cli):
    with tmpfs(tmp_path / "disk", size_bytes=SMALL_DISK) as disk:
        args = commands(sample, checkpoint, disk)[command]
        old = disk / ("m.onnx" if command == "export onnx" else "m.pt")
        old.write_bytes(b"the previous export")
        line = error_line(cli(*args))
        assert "(No space left on device)" in line and str(disk) in line, line
        assert "--resume" not in line
        assert old.read_bytes() == b"the previous export"
        assert not [p.name for p in disk.iterdir() if p.name.startswith(".")], "a temporary file stayed behind"
    if command.startswith("export"):
        assert line.endswith("the existing " + old.name + " is intact; free space, then export again"), line
