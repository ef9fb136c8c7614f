"""``onnx:`` teachers: the teacher contract through onnxruntime, dynamic and fixed batches, failures."""

import warnings

import pytest
import torch
from toy_teachers import RowPrior

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.teachers.load import load_teacher, predict_depth
from tiekd.pipeline.teachers.onnx import onnx_session

IMAGE = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))


def save_onnx(path, *, batch: int, dynamic: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            RowPrior(),
            (IMAGE[:batch],),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["depth"],
            dynamic_axes={"image": {0: "b"}, "depth": {0: "b"}} if dynamic else None,
        )
    return path


@pytest.mark.parametrize("dynamic, batch", [(True, 2), (False, 1), (False, 2)])
def test_flip_tta_with_dynamic_and_fixed_batches(tmp_path, dynamic, batch):
    path = save_onnx(tmp_path / "row.onnx", batch=batch, dynamic=dynamic)
    teacher = load_teacher(f"onnx:{path}")
    got = predict_depth(teacher.module, IMAGE, flip_tta=True)  # one call of batch 4
    torch.testing.assert_close(got, predict_depth(RowPrior(), IMAGE, flip_tta=True), rtol=1e-5, atol=1e-5)
    assert teacher.default_name == "row" and len(teacher.weights_sha256) == 64


def test_a_batch_that_is_not_a_multiple_of_the_fixed_one(tmp_path):
    teacher = load_teacher(f"onnx:{save_onnx(tmp_path / 'row.onnx', batch=2, dynamic=False)}")
    image = torch.cat([IMAGE, IMAGE[:1].flip(-1)])  # batch 3: chunks of 2, the second padded
    torch.testing.assert_close(teacher.module(image), RowPrior()(image), rtol=1e-5, atol=1e-5)


def test_failures(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(f"onnx:{tmp_path / 'missing.onnx'}")
    path = save_onnx(tmp_path / "row.onnx", batch=1, dynamic=True)
    with pytest.raises(TeacherError, match="teacher-arg cuda=true"):
        load_teacher(f"onnx:{path}", args={"threads": 2})
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(TeacherError, match="cannot load it"):
        load_teacher(f"onnx:{tmp_path / 'junk.onnx'}")


def test_cpu_session_when_cuda_is_not_wanted_or_not_offered(tmp_path):
    import onnxruntime

    path = save_onnx(tmp_path / "row.onnx", batch=1, dynamic=True)
    assert onnx_session(path, cuda=False).get_providers() == ["CPUExecutionProvider"]
    expected = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        expected.insert(0, "CUDAExecutionProvider")
    assert onnx_session(path, cuda=True).get_providers() == expected
