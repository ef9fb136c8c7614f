"""The run directory's logs on a full disk: one line, nothing written before lost, and a line torn
by the failed write (or by a kill) dropped when the run resumes."""

import os
import shutil

import pytest

from mounts import tmpfs
from tiekd.pipeline.errors import OutputError
from tiekd.stages.train_log import RunLog, read_jsonl

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_a_full_disk_is_one_line_and_the_torn_line_is_dropped_on_resume(tmp_path):
    with tmpfs(tmp_path / "disk", size_bytes=2 * PAGE) as disk:
        log = RunLog(disk, resume_step=None)
        with pytest.raises(OutputError) as info:
            for step in range(1, 10 * PAGE):
                log.step({"step": step, "loss": 0.25, "lr": 1e-3})
        assert info.value.message == (
            f"cannot write {disk / 'steps.jsonl'} (No space left on device); the checkpoints are intact: "
            "free space, then --resume"
        )
        lines = (disk / "steps.jsonl").read_text().splitlines()
        shutil.copytree(disk, tmp_path / "run")
    whole = [line for line in lines if line.endswith("}")]
    assert len(whole) >= len(lines) - 1 and len(whole) > 10
    assert whole == [f'{{"step": {s}, "loss": 0.25, "lr": 0.001}}' for s in range(1, len(whole) + 1)]
    # A kill in the middle of a write tears a line as a full disk may: resuming drops it.
    with open(tmp_path / "run" / "steps.jsonl", "a") as f:
        f.write('{"step": 99999, "lo')
    resumed = RunLog(tmp_path / "run", resume_step=len(whole) - 1)
    assert [r["step"] for r in read_jsonl(resumed.steps)] == list(range(1, len(whole)))
    assert not list((tmp_path / "run").glob(".*.tmp"))
