"""The checkpoints of a run directory: best.pt holds what inference needs, last.pt also what resuming needs."""

import pytest
import torch
from support.commands import evaluate_args

from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint

RESUME_ONLY = {"optimizer", "scheduler", "scaler"}
"""What only --resume reads, from last.pt."""
INFERENCE_KEYS = {"model", "architecture", "normalisation", "input_scale", "config", "step", "epoch", "best"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_best_holds_what_inference_needs_and_no_optimizer_state(run_dir):
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert set(best) == set(last) - RESUME_ONLY
    assert INFERENCE_KEYS <= set(best) and RESUME_ONLY <= set(last)
    student = student_from_checkpoint(best, path="best.pt")
    assert all(torch.equal(student.state_dict()[key], value) for key, value in best["model"].items())


def test_best_weighs_about_a_third_of_last(run_dir):
    """AdamW keeps two moments per weight: last.pt is about 3x the weights, best.pt 1x."""
    best, last = (run_dir / "best.pt").stat().st_size, (run_dir / "last.pt").stat().st_size
    assert 0.3 < best / last < 0.4, (best, last)


def test_every_reader_takes_best(run_dir, sample, cli, tmp_path):
    """evaluate, explain and export (network and weights) read the slim best.pt."""
    checkpoint = run_dir / "best.pt"
    result = cli(*evaluate_args(sample, "--checkpoint", checkpoint))
    assert result.exit_code == 0, result.output
    explain = ["--checkpoint", checkpoint, "--data-root", sample.data_root, "--gt-root", sample.gt_root]
    explain += ["--split", sample.test_split]
    result = cli("explain", *explain, "--images", "1", "--pixel", "0,0", "--out", tmp_path / "x", "--device", "cpu")
    assert result.exit_code == 0 and (tmp_path / "x" / "index.html").is_file(), result.output
    for form, name in (("checkpoint", "w.pt"), ("export", "s.pt2")):
        result = cli("export", "--checkpoint", checkpoint, "--format", form, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
