"""Every teacher kind behind one contract, flip TTA, resizing, and the failures."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from toy_teachers import RowPrior

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.teachers.load import load_teacher, predict_depth

IMAGE = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))


def reference(image):
    return RowPrior()(image)


def test_python_factory_with_args():
    teacher = load_teacher("python:toy_teachers:row_prior", args={"seed": 0})
    torch.testing.assert_close(teacher.module(IMAGE), reference(IMAGE))
    assert teacher.default_name == "row_prior" and len(teacher.weights_sha256) == 64
    assert not any(p.requires_grad for p in teacher.module.parameters())


def test_export_program(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(RowPrior(), (IMAGE,), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, tmp_path / "row.pt2")
    teacher = load_teacher(f"export:{tmp_path / 'row.pt2'}")
    torch.testing.assert_close(predict_depth(teacher.module, IMAGE, flip_tta=False), reference(IMAGE))
    assert teacher.default_name == "row"


def test_torchscript(tmp_path):
    torch.jit.save(torch.jit.trace(RowPrior(), IMAGE), tmp_path / "row.ts")
    teacher = load_teacher(f"torchscript:{tmp_path / 'row.ts'}")
    torch.testing.assert_close(teacher.module(IMAGE), reference(IMAGE))


def test_flip_tta_is_mean_of_prediction_and_flipped_back_prediction():
    model = RowPrior()
    expected = (model(IMAGE) + model(IMAGE.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(predict_depth(model, IMAGE), expected)
    assert not torch.allclose(predict_depth(model, IMAGE), predict_depth(model, IMAGE, flip_tta=False))


def test_output_of_another_size_is_refused_unless_teacher_input_asks_for_it():
    small = load_teacher("python:toy_teachers:small_map_teacher").module
    with pytest.raises(TeacherError, match="returned 10x10 depth for a 32x48 input.*--teacher-input"):
        predict_depth(small, IMAGE)
    depth = predict_depth(small, IMAGE, flip_tta=False, input_size=(10, 10))
    torch.testing.assert_close(depth, torch.full((2, 1, 32, 48), 10.0))


def test_torchscript_load_is_silent(tmp_path, recwarn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(RowPrior(), IMAGE), tmp_path / "row.ts")
    recwarn.clear()
    load_teacher(f"torchscript:{tmp_path / 'row.ts'}")
    assert not [str(w.message) for w in recwarn]


def test_teacher_input_resizes_in_and_out():
    depth = predict_depth(RowPrior(), IMAGE, flip_tta=False, input_size=(16, 24))
    small = RowPrior()(F.interpolate(IMAGE, size=(16, 24), mode="bilinear", align_corners=False))
    torch.testing.assert_close(depth, F.interpolate(small, size=(32, 48), mode="bilinear", align_corners=False))


def test_three_dim_output_accepted_and_wrong_shape_refused():
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean(1)

    assert predict_depth(Flat(), IMAGE).shape == (2, 1, 32, 48)
    with pytest.raises(TeacherError, match=r"returned shape \(4, 2, 32, 48\).*expected \(B, 1, H, W\)"):
        predict_depth(load_teacher("python:toy_teachers:two_channel_teacher").module, IMAGE)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("nonsense", "is not KIND:TARGET"),
        ("tflite:model.tflite", "is not KIND:TARGET"),
        ("export:/nope/model.pt2", "does not exist"),
        ("python:toy_teachers", "expected python:package.module:factory"),
        ("python:no_such_module:f", "cannot import f from no_such_module"),
        ("python:toy_teachers:not_a_module", "returned str, not an nn.Module"),
        ("hf:/nope/model", "cannot load a depth-estimation model"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(TeacherError) as info:
        load_teacher(spec)
    assert fragment in info.value.message


def test_corrupt_export_file_is_one_line_without_torchs_traceback(tmp_path, capfd):
    (tmp_path / "bad.pt2").write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(TeacherError, match="is not a torch.export archive"):
        load_teacher(f"export:{tmp_path / 'bad.pt2'}")
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_static_batch_export_runs_any_batch_and_flip_tta(tmp_path):
    """Exported with batch 1 fixed: batches of 2 (and 4 under flip TTA) run in chunks of 1."""
    torch.export.save(torch.export.export(RowPrior(), (IMAGE[:1],)), tmp_path / "static.pt2")
    teacher = load_teacher(f"export:{tmp_path / 'static.pt2'}")
    model = RowPrior()
    torch.testing.assert_close(predict_depth(teacher.module, IMAGE), predict_depth(model, IMAGE))
    torch.export.save(torch.export.export(RowPrior(), (IMAGE,)), tmp_path / "static2.pt2")
    three = torch.cat([IMAGE, IMAGE[:1]])  # a batch of 3 on a program of 2: the last chunk is padded
    teacher = load_teacher(f"export:{tmp_path / 'static2.pt2'}")
    torch.testing.assert_close(predict_depth(teacher.module, three), predict_depth(model, three))


class Payload:
    """Unpickling this creates the file ``marker``: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_archive(tmp_path, marker, *, pickle_weights=True, pickle_inputs=False):
    """A real export archive whose weight (or sample inputs) was replaced by a code-running pickle."""
    import io
    import json
    import pickle
    import zipfile

    torch.export.save(torch.export.export(RowPrior(), (IMAGE,)), tmp_path / "row.pt2")
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(tmp_path / "row.pt2") as source, zipfile.ZipFile(crafted, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if pickle_weights and name.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                config["config"]["colour"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif (pickle_weights and name.endswith("data/weights/weight_0")) or (
                pickle_inputs and name.endswith("data/sample_inputs/model.pt")
            ):
                buffer = io.BytesIO()
                torch.save(Payload(marker), buffer, _use_new_zipfile_serialization=True)
                data = buffer.getvalue() if pickle_inputs else pickle.dumps(Payload(marker))
            target.writestr(name, data)
    return crafted


def second_program_archive(tmp_path, marker):
    """A real export archive with its program intact plus a second program, ``other``, whose
    weight is a code-running pickle (torch.export.load deserialises every program)."""
    import json
    import pickle
    import zipfile

    torch.export.save(torch.export.export(RowPrior(), (IMAGE,)), tmp_path / "row.pt2")
    crafted = tmp_path / "two.pt2"
    copies = ("models/model.json", "data/weights/model_weights_config.json",
              "data/constants/model_constants_config.json", "data/sample_inputs/model.pt")  # fmt: skip
    with zipfile.ZipFile(tmp_path / "row.pt2") as source, zipfile.ZipFile(crafted, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data)
            if not name.endswith(copies):
                continue
            root, inner = name.split("/", 1)
            if inner == copies[1]:
                config = json.loads(data)
                config["config"]["colour"] |= {"use_pickle": True, "path_name": "weight_pwn"}
                data = json.dumps(config).encode()
                target.writestr(f"{root}/data/weights/weight_pwn", pickle.dumps(Payload(marker)))
            target.writestr(f"{root}/{inner.replace('model.', 'other.').replace('model_', 'other_')}", data)
    return crafted


def test_a_second_program_of_the_archive_is_inspected_too(tmp_path):
    marker = tmp_path / "pwned"
    crafted = second_program_archive(tmp_path, marker)
    with pytest.raises(TeacherError, match="stores 'colour' as a pickle"):
        load_teacher(f"export:{crafted}")
    assert not marker.exists()
    try:  # the archive really is an attack: torch's own loader runs the second program's payload
        torch.export.load(str(crafted))
    except Exception:
        pass
    assert marker.exists()


@pytest.mark.parametrize("what", ["weights", "sample inputs"])
def test_export_archive_that_would_unpickle_is_refused(tmp_path, what):
    marker = tmp_path / "pwned"
    crafted = crafted_archive(tmp_path, marker, pickle_weights=what == "weights", pickle_inputs=what != "weights")
    with pytest.raises(TeacherError, match="cannot run code"):
        load_teacher(f"export:{crafted}")
    assert not marker.exists()
    try:  # the archive really is an attack: torch's own loader runs the payload
        torch.export.load(str(crafted))
    except Exception:
        pass
    assert marker.exists()
