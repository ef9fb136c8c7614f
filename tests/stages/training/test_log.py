"""The run directory's logs on a full disk: one line, nothing written before lost, and a line torn
by a failed write (or by a kill) dropped when the run resumes."""

import json
import os

import pytest
from support.mounts import tmpfs

from tiekd.pipeline.errors import OutputError
from tiekd.stages.training.log import RunLog, read_jsonl

PAGE = os.sysconf("SC_PAGE_SIZE")


def record(step: int) -> dict:
    return {"step": step, "loss": 0.25, "lr": 1e-3}


def test_a_full_disk_is_one_line_and_keeps_what_was_logged(tmp_path, capfd):
    with tmpfs(tmp_path / "disk", size_bytes=2 * PAGE) as disk:
        log = RunLog(disk, resume_step=None)
        with pytest.raises(OutputError) as info:
            for step in range(1, 10 * PAGE):
                log.step(record(step))
        # Whichever file meets the full disk first, the steps or TensorBoard's events, is named.
        assert info.value.message in [
            f"cannot write {what} (No space left on device); the checkpoints are intact: free space, then --resume"
            for what in (disk / "steps.jsonl", f"the TensorBoard events in {disk}")
        ]
        with pytest.raises(OutputError):
            log.close()  # the events still pending fail alike
        lines = (disk / "steps.jsonl").read_text().splitlines()
    whole = lines if not lines or lines[-1].endswith("}") else lines[:-1]
    assert [json.loads(line) for line in whole] == [record(s) for s in range(1, len(whole) + 1)]
    assert "Traceback" not in capfd.readouterr().err  # tensorboard's writer thread printed nothing


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    log = RunLog(tmp_path, resume_step=None)
    for step in range(1, 6):
        log.step(record(step))
    log.close()
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a kill in the middle of a write
    resumed = RunLog(tmp_path, resume_step=4)
    resumed.close()
    assert read_jsonl(tmp_path / "steps.jsonl") == [record(s) for s in range(1, 5)]
    assert not list(tmp_path.glob(".*.tmp"))

