"""`tiekd demo --quick` end to end, as a newcomer runs it, and a second run reusing the first.
(A fresh run elsewhere repeated every figure when this test still ran one; the suite leaves it out for
time: training's determinism is tested run against run in tests/stages/training.)"""

import json
import re

import pytest
import torch
from PIL import Image

from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.inputs import PackedInputs

pytestmark = pytest.mark.slow

ROWS = ("teacher (supervised on dense GT", "TIE-KD (DPM + SSIM", "response KD, SSIM", "supervised baseline")


def test_quick_demo_runs_everything_then_reuses_it(tmp_path, cli):
    out = tmp_path / "demo"
    first = cli("demo", "--quick", "--out", out, "--device", "cpu")
    assert first.exit_code == 0, first.output
    for step in range(1, 7):
        assert f"== {step}/6" in first.output
    results = (out / "results.md").read_text()
    for row in ROWS:
        line = next(line for line in results.splitlines() if line.startswith(f"| {row}"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert re.fullmatch(r"\d+\.\d\d M", cells[2]), cells
        assert all(float(c) >= 0 for c in cells[3:6]), cells
        assert (float(cells[6]) >= 0) if row.startswith("TIE-KD") else cells[6] == "-", cells
    assert "synthetic" in results.lower() or "Synthetic" in results
    with Image.open(out / "comparison.png") as picture:
        assert picture.width > 4 * 600 and picture.height > 3 * 176
    for split in ("train", "test"):
        assert TeacherCache.open(out / "teacher-cache.zarr", "teacher", split).complete
        assert PackedInputs.open(str(out / "teacher-cache.zarr"), split).done.all()
    for method in ("tiekd", "supervised"):  # the students read the packed split, not the files
        run = json.loads((out / "students" / method / "run.json").read_text())
        assert run["data_root"] is None and run["inputs"] == str(out / "teacher-cache.zarr")
    second = cli("demo", "--quick", "--out", out, "--device", "cpu")
    assert second.exit_code == 0, second.output
    assert second.output.count("already trained") == 4 and "already there, reused" in second.output
    assert "wrote 0 frames" in second.output
    assert (out / "results.md").read_text().split("| method")[1] == results.split("| method")[1]
    # What the figures depend on is in the table's header, and they repeat in a fresh run.
    assert f"torch {torch.__version__}, 1 CPU thread, CPU instructions " in results
    assert "deterministic algorithms on" in results
