"""``tiekd export --int8``: a QDQ INT8 model calibrated on the user's frames, its accuracy change
measured against the float model (and GT) and written beside it; a broken calibration shows."""

import json

import numpy as np
import onnx
import pytest
import torch

from tiekd.data.kitti import KITTI
from tiekd.pipeline.checkpoint import save_checkpoint
from tiekd.pipeline.deploy.export import DeployedStudent, export_onnx, onnx_runner
from tiekd.pipeline.deploy.quantize import quantize_int8
from tiekd.pipeline.students import build_student
from tiekd.stages.export import report_path
from tiekd.stages.export_int8 import measure, read_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (22, 76)
"""The KB crop at 1/16: the checkpoint's training scale."""


def input_dependent_student(head: str):
    """A random test_resnet student without biases, its head scaled to logits of std 3: its depth
    follows the image (a default random student's barely does, so no quantization could change it)."""
    torch.manual_seed(0)
    model = build_student("test_resnet", head=head, **(KITTI.depth_bins | {"n_bins": 16})).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
        model.output_conv.weight *= 3 / model.output_conv(model.decode(torch.rand(2, 3, *SIZE))).std()
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = input_dependent_student("dpm")
    path = tmp_path_factory.mktemp("int8") / "dpm.pt"
    state = {"model": model.state_dict(), "architecture": model.arch, "input_scale": 0.0625}
    save_checkpoint(path, state | {"normalisation": model.normalisation})
    return path


def frames_options(sample):
    return ["--split", sample.train_split, "--data-root", sample.data_root, "--calibration-frames", "2"]


def test_int8_export_prints_and_writes_the_measured_change(sample, checkpoint, tmp_path, cli):
    out = tmp_path / "dpm.int8.onnx"
    result = cli("export", "--checkpoint", checkpoint, "--out", out, "--int8", "--gt-root", sample.gt_root,
                 *frames_options(sample))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "INT8 (QDQ, per-channel int8 weights, uint8 activations): input 1x3x22x76" in result.output
    assert "onnxruntime (float model) depth vs the checkpoint's" in result.output
    assert "calibrated on 2 frames" in result.output and "measured on 2 other frames" in result.output
    report = json.loads(report_path(out).read_text())
    assert set(report["metrics"]) == {"int8 vs float", "float vs GT", "int8 vs GT"}
    assert not set(report["calibration_frames"]) & set(report["measured_frames"])
    change = report["metrics"]["int8 vs float"]
    assert f"int8: int8 vs float: abs_rel {change['abs_rel']:.4f}" in result.output
    assert 0 < change["abs_rel"] < 0.05  # a real change, small with a real calibration
    nodes = onnx.load(str(out)).graph.node
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) > 5 and report["int8_bytes"] < report["float_bytes"]


def test_constant_calibration_frames_show_a_large_change(sample, tmp_path):
    """The measurement is real: frames unlike the data (black, white) calibrate ranges the real
    frames overflow, and the measured change grows several times over."""
    model = DeployedStudent(input_dependent_student("dpm"), input_size=SIZE)
    export_onnx(model, tmp_path / "float.onnx", SIZE, dynamic_batch=False)

    class Options:
        split, data_root, gt_root, calibration_frames = sample.train_split, sample.data_root, None, 2

    frames = read_frames(Options, KITTI, SIZE)
    change = {}
    for name, value in (("real", None), ("black", 0.0), ("white", 1.0)):
        calibration = frames.calibration if value is None else [np.full_like(frames.calibration[0], value)] * 2
        quantize_int8(tmp_path / "float.onnx", tmp_path / f"{name}.onnx", calibration)
        runners = onnx_runner(tmp_path / "float.onnx"), onnx_runner(tmp_path / f"{name}.onnx")
        change[name] = measure(*runners, frames, KITTI)["int8 vs float"]["abs_rel"]
    assert change["black"] > 3 * change["real"] and change["white"] > 3 * change["real"], change


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("--int8",), "--int8 calibrates on real frames: pass --split and --data-root"),
        (("--int8", "--format", "export"), "--int8 writes an ONNX model"),
    ],
)
def test_refusals(checkpoint, tmp_path, cli, extra, fragment):
    out = tmp_path / "out.onnx"
    out.write_text("kept")
    result = cli("export", "--checkpoint", checkpoint, "--out", out, *extra)
    assert result.exit_code != 0 and fragment in result.output and "Traceback" not in result.output
    assert out.read_text() == "kept"
