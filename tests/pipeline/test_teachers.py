"""Every teacher kind behind one contract, flip TTA, resizing, and the failures."""

import pytest
import torch
import torch.nn.functional as F

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.teachers import default_name, load_teacher, parse_teacher_args, predict_depth
from toy_teachers import RowPrior

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


def test_hf_tiny_random_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GLPNConfig(
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=16,
        max_depth=80,
    )
    torch.manual_seed(0)
    model = transformers.GLPNForDepthEstimation(config).eval()
    model.save_pretrained(tmp_path)
    transformers.GLPNImageProcessor().save_pretrained(tmp_path)
    teacher = load_teacher(f"hf:{tmp_path}")
    depth = predict_depth(teacher.module, IMAGE, flip_tta=False)
    assert depth.shape == (2, 1, 32, 48) and torch.isfinite(depth).all()
    with torch.no_grad():  # the same model driven by hand: resize to a multiple of 32, run, resize back
        pixels = transformers.GLPNImageProcessor()(images=IMAGE, return_tensors="pt", do_rescale=False)["pixel_values"]
        expected = F.interpolate(
            model(pixel_values=pixels).predicted_depth[:, None], size=(32, 48), mode="bicubic", align_corners=False
        )
    torch.testing.assert_close(depth, expected, rtol=1e-4, atol=1e-4)
    assert teacher.default_name == tmp_path.name


def test_flip_tta_is_mean_of_prediction_and_flipped_back_prediction():
    model = RowPrior()
    expected = (model(IMAGE) + model(IMAGE.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(predict_depth(model, IMAGE), expected)
    assert not torch.allclose(predict_depth(model, IMAGE), predict_depth(model, IMAGE, flip_tta=False))


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
        ("onnx:model.onnx", "is not KIND:TARGET"),
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


def test_corrupt_export_file(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(TeacherError, match="cannot load it"):
        load_teacher(f"export:{tmp_path / 'bad.pt2'}")


def test_teacher_args_and_names():
    assert parse_teacher_args(["seed=3", "name=x", "flag=true", "w=[1, 2]"]) == {
        "seed": 3,
        "name": "x",
        "flag": True,
        "w": [1, 2],
    }
    with pytest.raises(TeacherError, match="not of the form name=value"):
        parse_teacher_args(["novalue"])
    assert default_name("hf:vinvino02/glpn-kitti") == "glpn-kitti"
    assert default_name("export:/m/adabins.kitti.pt2") == "adabins"
    assert default_name("python:pkg.mod:make_teacher") == "make_teacher"
