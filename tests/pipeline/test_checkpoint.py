"""Checkpoint files under faults: foreign pickles, directories, a full disk, a read-only folder.

Each refusal is one line and leaves what was stored as it was.
"""

import pickle

import numpy as np
import pytest
import torch
from support.mounts import assert_unwritable, read_only_folder, tmpfs

from tiekd.pipeline.checkpoint import load_checkpoint, save_checkpoint
from tiekd.pipeline.errors import CheckpointError, OutputError

STATE_BYTES = 1 << 20
"""Each test checkpoint holds one float32 tensor of this many bytes."""


def state(step: int) -> dict:
    return {"step": step, "architecture": {}, "model": {"w": torch.full((STATE_BYTES // 4,), float(step))}}


def one_line(error: Exception) -> str:
    message = error.message
    assert "\n" not in message and len(message) < 400, message
    return message


class TestLoadRefusals:
    @pytest.mark.parametrize(
        "write",
        [
            lambda f: pickle.dump({"weights": [1, 2, 3]}, f),  # protocol 4+: torch's unpickler stops at once
            lambda f: pickle.dump({"weights": np.zeros(3)}, f, protocol=2),  # an object it must not build
        ],
        ids=["plain-pickle", "pickled-object"],
    )
    def test_a_foreign_pickle_is_one_line(self, tmp_path, recwarn, write):
        path = tmp_path / "foreign.pt"
        with open(path, "wb") as f:
            write(f)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert one_line(info.value).startswith(f"checkpoint {path} is corrupt or not a torch file (UnpicklingError")
        assert not [w for w in recwarn if "pickle" in str(w.message)]

    @pytest.mark.parametrize("text", [b"hi\n", b"\x80\x04K\x01.", b""], ids=["text", "bare-pickle", "empty"])
    def test_any_other_file_is_one_line(self, tmp_path, text):
        # "hi" made torch's unpickler raise KeyError, which reached the user as a traceback (--init-from).
        path = tmp_path / "other.pt"
        path.write_bytes(text)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = one_line(info.value)
        assert message.startswith(f"checkpoint {path} is corrupt or not a torch file (") or "not a tiekd checkpoint" in message

    def test_a_directory_is_named_as_one(self, tmp_path):
        with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path} is a directory, not a file"):
            load_checkpoint(tmp_path)


class TestWriteFaults:
    def test_a_full_disk_keeps_the_previous_checkpoint(self, tmp_path):
        # Room for one checkpoint and a half: the first save fits, the second (written beside the
        # first before the rename) runs out of space.
        with tmpfs(tmp_path / "disk", size_bytes=STATE_BYTES * 3 // 2) as disk:
            save_checkpoint(disk / "last.pt", state(1))
            before = (disk / "last.pt").read_bytes()
            with pytest.raises(OutputError) as info:
                save_checkpoint(disk / "last.pt", state(2))
            assert one_line(info.value) == (
                f"cannot write checkpoint {disk / 'last.pt'} (No space left on device); the previous last.pt is "
                "intact; free space or fix the folder, then --resume"
            )
            assert (disk / "last.pt").read_bytes() == before and load_checkpoint(disk / "last.pt")["step"] == 1
            assert [p.name for p in disk.iterdir()] == ["last.pt"]

    def test_a_read_only_folder_is_one_line(self, tmp_path):
        with read_only_folder(tmp_path / "ro") as folder:
            assert_unwritable(folder)
            with pytest.raises(OutputError) as info:
                save_checkpoint(folder / "last.pt", state(1))
            assert one_line(info.value).startswith(f"cannot write checkpoint {folder / 'last.pt'} (")
            assert "no last.pt was written" in info.value.message
