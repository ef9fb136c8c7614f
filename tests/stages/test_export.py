"""``tiekd export``: both network formats equal the checkpoint (dynamic and fixed batch, entropy), the
weights-only checkpoint, refusals, and exported students teaching students through cache-teacher."""

import numpy as np
import onnxruntime
import pytest
import torch

from tiekd.data.kitti import KITTI, read_split
from tiekd.pipeline.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from tiekd.pipeline.dpm import dpm_entropy
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.students import build_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDENT = "test_resnet"
INPUT = (32, 64)
"""Exported input size in the tests (H, W)."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"dpm": ..., "regression": ...}: full checkpoints (with an optimizer state) of random students."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for head in ("dpm", "regression"):
        torch.manual_seed(0)
        model = build_student(STUDENT, head=head, **(KITTI.depth_bins | {"n_bins": 16}))
        optimizer = torch.optim.AdamW(model.parameters())
        model(torch.rand(1, 3, *INPUT)).mean().backward()
        optimizer.step()
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "architecture": model.arch}
        paths[head] = folder / f"{head}.pt"
        save_checkpoint(paths[head], state | {"normalisation": model.normalisation, "input_scale": 0.0625})
    return paths


def student(path):
    return student_from_checkpoint(load_checkpoint(path)).eval()


def export(cli, checkpoint, out, *extra):
    result = cli("export", "--checkpoint", checkpoint, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return result.output


def run_file(path, image: torch.Tensor) -> list[np.ndarray]:
    if path.suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": image.numpy()})
    outputs = torch.export.load(str(path)).module()(image)
    return [o.detach().numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


class TestNetworkFormats:
    @pytest.mark.parametrize(
        "suffix, fmt, head", [(".onnx", "onnx", "dpm"), (".pt2", "export", "dpm"), (".onnx", "onnx", "regression")]
    )
    def test_dynamic_batch_equals_the_checkpoint(self, checkpoints, tmp_path, cli, suffix, fmt, head):
        out = tmp_path / f"student{suffix}"
        output = export(cli, checkpoints[head], out, "--format", fmt, "--input", "32x64", "--dynamic")
        assert "input Bx3x32x64 float32 RGB in [0, 1], output depth Bx1x32x64 in metres" in output
        assert "max relative difference" in output and output.rstrip().endswith(": OK")
        image = torch.rand(3, 3, *INPUT, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = student(checkpoints[head]).predict_depth(image).numpy()
        [depth] = run_file(out, image)
        assert depth.shape == (3, 1, *INPUT)
        np.testing.assert_allclose(depth, expected, rtol=1e-4)

    @pytest.mark.parametrize("suffix, fmt", [(".onnx", "onnx"), (".pt2", "export")])
    def test_fixed_batch_with_entropy_at_the_training_scale(self, checkpoints, tmp_path, cli, suffix, fmt):
        out = tmp_path / f"student{suffix}"
        output = export(cli, checkpoints["dpm"], out, "--format", fmt, "--with-entropy")
        assert "input 1x3x22x76" in output and "and entropy (nats)" in output  # 352x1216 at 1/16
        image = torch.rand(1, 3, 22, 76, generator=torch.Generator().manual_seed(6))
        model = student(checkpoints["dpm"])
        with torch.no_grad():
            expected = [model.predict_depth(image).numpy(), dpm_entropy(model(image)).numpy()]
        got = run_file(out, image)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-4)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-4)
        if fmt == "onnx":
            assert onnxruntime.InferenceSession(str(out)).get_inputs()[0].shape == [1, 3, 22, 76]


class TestWeightsOnly:
    def test_small_file_with_the_same_weights(self, checkpoints, tmp_path, cli):
        out = tmp_path / "share.pt"
        output = export(cli, checkpoints["dpm"], out, "--format", "checkpoint")
        assert "weights only" in output and "equal the checkpoint's: OK" in output
        state = load_checkpoint(out)
        assert "optimizer" not in state and state["input_scale"] == 0.0625
        assert out.stat().st_size < 0.6 * checkpoints["dpm"].stat().st_size
        full, small = student(checkpoints["dpm"]).state_dict(), student(out).state_dict()
        assert all(torch.equal(full[k], small[k]) for k in full)


class TestRefusals:
    @pytest.mark.parametrize(
        "head, extra, fragment",
        [
            ("regression", ("--with-entropy",), "--with-entropy needs a DPM student"),
            ("dpm", ("--format", "checkpoint", "--dynamic"), "--format checkpoint keeps the weights only"),
            ("dpm", ("--input", "32by64"), "is not HEIGHTxWIDTH"),
        ],
    )
    def test_options(self, checkpoints, tmp_path, cli, head, extra, fragment):
        out = tmp_path / "out.onnx"
        out.write_text("kept")
        result = cli("export", "--checkpoint", checkpoints[head], "--out", out, *extra)
        assert result.exit_code != 0 and fragment in result.output and "Traceback" not in result.output
        assert out.read_text() == "kept"

    def test_missing_checkpoint(self, tmp_path, cli):
        result = cli("export", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "x.onnx")
        assert result.exit_code != 0 and "does not exist" in result.output


class TestStudentsTeachStudents:
    def test_exported_students_cache_like_the_checkpoint(self, sample, checkpoints, tmp_path, cli):
        """The same student as checkpoint:, export: and onnx: teacher fills stores that agree within
        the store's quantisation (a fixed-batch onnx teacher is tested in tests/pipeline/teachers/test_onnx.py)."""
        teacher_input = "44x152"
        specs = {"checkpoint": f"checkpoint:{checkpoints['dpm']}"}
        for name, suffix, fmt, extra in (
            ("program", ".pt2", "export", ["--dynamic"]),
            ("onnx", ".onnx", "onnx", ["--dynamic"]),
        ):
            path = tmp_path / f"{name}{suffix}"
            export(cli, checkpoints["dpm"], path, "--format", fmt, "--input", teacher_input, *extra)
            specs[name] = f"{fmt if fmt == 'onnx' else 'export'}:{path}"
        store = tmp_path / "s.zarr"
        for name, spec in specs.items():
            result = cli(
                "cache-teacher", "--teacher", spec, "--name", name, "--data-root", sample.data_root,
                "--split", sample.test_split, "--out", store, "--teacher-input", teacher_input,
                "--workers", "0", "--batch-size", "2", "--device", "cpu",
            )  # fmt: skip
            assert result.exit_code == 0, result.output
        reference = TeacherCache.open(store, "checkpoint", "test")
        for name in ("program", "onnx"):
            cache = TeacherCache.open(store, name, "test")
            assert cache.complete and cache.ids == [r.rgb for r in read_split(sample.test_split)]
            for i in range(len(cache.ids)):
                np.testing.assert_allclose(cache.depth(i), reference.depth(i), rtol=1e-3, atol=2 / 512)
