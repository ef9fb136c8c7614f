"""``train-student --decoder light`` reaches the student and its checkpoint."""

import pytest

from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_light_decoder_flag_reaches_the_checkpoint(sample, tmp_path, cli):
    result = cli(
        "train-student", "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--split", sample.test_split,
        "--student", "test_resnet", "--method", "supervised", "--decoder", "light", "--out", tmp_path / "run",
        "--max-steps", "1", "--batch-size", "2", "--scale", "0.0625", "--no-pretrained", "--workers", "0",
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["architecture"]["decoder"] == "light"
    assert student_from_checkpoint(state).output_conv.in_channels == 64  # test_resnet: stem at 1/2, one x2 block
