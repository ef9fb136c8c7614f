"""Tests of tiekd.pipeline.students, parametrized over the named presets."""

import functools
import json

import huggingface_hub.constants
import pytest
import torch

from tiekd.data.kitti import KITTI
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.students import STUDENTS, build_student, decoder_widths

PRESETS = sorted(STUDENTS)
# Parameter counts of the authors' students (DPM head, 257 bins), method.md section 4, exactly.
AUTHORS_PARAMETERS = {"mobilenetv2": 17_646_465, "resnet18": 16_487_617, "resnet50": 78_097_857}
# The regression head swaps the 1x1 conv 128 -> 257 (128 * 257 + 257 weights) for a 3x3 conv
# 128 -> 1 (128 * 9 + 1): 32,000 parameters fewer.
REGRESSION_HEAD_DIFFERENCE = (128 * 257 + 257) - (128 * 9 + 1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH, HEIGHT, WIDTH = 2, 32, 64


@functools.cache
def student(encoder, head="dpm"):
    """One shared, randomly initialised student per (encoder, head), in eval mode."""
    torch.manual_seed(0)
    return build_student(encoder, head=head, **KITTI.depth_bins).eval()


@functools.cache
def image():
    return torch.rand(BATCH, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("encoder", PRESETS)
def test_parameter_count_matches_the_authors(encoder):
    count = sum(p.numel() for p in student(encoder).parameters())
    assert count == AUTHORS_PARAMETERS[encoder]


@pytest.mark.parametrize("encoder", PRESETS)
def test_regression_student_parameter_count(encoder):
    count = sum(p.numel() for p in student(encoder, "regression").parameters())
    assert count == AUTHORS_PARAMETERS[encoder] - REGRESSION_HEAD_DIFFERENCE


@pytest.mark.parametrize("encoder", PRESETS)
def test_dpm_head_outputs(encoder):
    model = student(encoder)
    with torch.no_grad():
        logits = model(image())
        depth = model.predict_depth(image())
    assert logits.shape == (BATCH, 257, HEIGHT, WIDTH) and torch.isfinite(logits).all()
    assert depth.shape == (BATCH, 1, HEIGHT, WIDTH)
    assert depth.min() >= 1e-3 and depth.max() <= 80.0
    # Independent expected bin centre in float64: softmax over bins times centres (e_{i-1}+e_i)/2.
    edges = torch.linspace(1e-3, 80.0, 258, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    reference = (torch.softmax(logits.double(), dim=1) * centres.view(1, -1, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(depth.double(), reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("encoder", PRESETS)
def test_regression_head_outputs(encoder):
    model = student(encoder, "regression")
    with torch.no_grad():
        depth = model(image())
        predicted = model.predict_depth(image())
    assert depth.shape == (BATCH, 1, HEIGHT, WIDTH)
    assert depth.min() > 0.0 and depth.max() < 80.0
    torch.testing.assert_close(predicted, depth.clamp(1e-3, 80.0))


@pytest.mark.parametrize("encoder", PRESETS)
def test_normalisation_happens_inside_the_model(encoder):
    model = student(encoder)
    assert model.normalisation.keys() == {"mean", "std"}
    assert model.normalisation["mean"] == pytest.approx(IMAGENET_MEAN)
    assert model.normalisation["std"] == pytest.approx(IMAGENET_STD)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        manual = model.output_conv(model.decoder(model.encoder((image() - mean) / std)))
        torch.testing.assert_close(model(image()), manual)
    # Constants that follow the model are not weights: they stay out of the checkpoint.
    assert not {"mean", "std", "bin_centres"} & set(model.state_dict())


@pytest.mark.parametrize("encoder", PRESETS)
def test_arch_round_trip(encoder):
    model = build_student(encoder, head="dpm", n_bins=49, min_depth=1e-3, max_depth=10.0)
    arch = json.loads(json.dumps(model.arch))
    assert arch == dict(encoder=encoder, head="dpm", n_bins=49, min_depth=1e-3, max_depth=10.0)
    rebuilt = build_student(**arch)
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    assert shapes == {name: tensor.shape for name, tensor in rebuilt.state_dict().items()}
    assert rebuilt.bin_centres[-1].item() == pytest.approx(10.0 - (10.0 - 1e-3) / 49 / 2)


def test_mobilenetv2_takes_the_authors_features():
    info = student("mobilenetv2").encoder.feature_info
    assert info.channels() == [24, 32, 96, 320] and info.reduction() == [4, 8, 8, 8]
    assert len(student("mobilenetv2").decoder.upsamples) == 2
    assert student("mobilenetv2").decoder.bottleneck.out_channels == 2048


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
def test_resnets_take_the_stem_and_every_stage(encoder):
    info = student(encoder).encoder.feature_info
    assert info.reduction() == [2, 4, 8, 16, 32] and info.channels()[0] == 64
    assert len(student(encoder).decoder.upsamples) == 1


def test_general_width_rule():
    assert decoder_widths([64, 256, 512, 1024, 2048]) == [2048, 1024, 512, 256, 128]
    assert decoder_widths([16, 24, 40, 112, 320]) == [320, 160, 128, 128, 128]
    assert decoder_widths([512]) == [128]


# One small member of each timm family the README promises (a CNN, EfficientNet, ConvNeXt, ViT,
# DeiT, Swin) and its deepest feature's width.
TIMM_FAMILIES = {
    "resnet10t": 512,
    "efficientnet_b0": 320,
    "convnext_atto": 320,
    "vit_tiny_patch16_224": 192,
    "deit_tiny_patch16_224": 192,
    "swin_tiny_patch4_window7_224": 768,
}


@pytest.mark.parametrize("encoder", sorted(TIMM_FAMILIES))
def test_any_timm_family_at_any_input_size(encoder):
    torch.manual_seed(0)
    model = build_student(encoder, head="dpm", **(KITTI.depth_bins | {"n_bins": 9})).eval()
    assert model.arch["encoder"] == encoder
    assert model.decoder.bottleneck.in_channels == TIMM_FAMILIES[encoder]
    with torch.no_grad():
        depth = model.predict_depth(image())
    assert depth.shape == (BATCH, 1, HEIGHT, WIDTH) and torch.isfinite(depth).all()


def test_a_fixed_size_encoder_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"'cait_xxs24_224' only runs at the input size it was built for") as error:
        build_student("cait_xxs24_224", **(KITTI.depth_bins | {"n_bins": 9}))
    assert "\n" not in str(error.value)


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_net"):
        build_student("no_such_net", **KITTI.depth_bins)


def test_unknown_head_is_a_config_error():
    with pytest.raises(ConfigError, match="classification"):
        build_student("resnet18", head="classification", **KITTI.depth_bins)


def test_any_input_size_is_padded_and_cropped_back():
    model = student("resnet18", head="regression").eval()
    image = torch.rand(1, 3, 48, 100, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image, (0, 28, 0, 16), mode="replicate")
    with torch.no_grad():
        depth, reference = model(image), model(padded)[..., :48, :100]
    assert depth.shape == (1, 1, 48, 100)
    torch.testing.assert_close(depth, reference)


def test_pretrained_weights_offline_is_a_config_error(monkeypatch, tmp_path):
    # No network and an empty cache: the Hub client fails at once instead of retrying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match="ImageNet weights for resnet18.*--no-pretrained"):
        build_student("resnet18", pretrained=True, **KITTI.depth_bins)


# The start weights of the authors' students as timm names them: torchvision's v1 ResNets; for
# MobileNetV2 (authors: mmcls://mobilenet_v2) the only ImageNet-1k weights timm has.
AUTHORS_START_WEIGHTS = {
    "mobilenetv2": "mobilenetv2_100.ra_in1k",
    "resnet18": "resnet18.tv_in1k",
    "resnet50": "resnet50.tv_in1k",
}


@pytest.mark.parametrize("encoder", PRESETS)
def test_presets_start_from_the_authors_weights(encoder):
    cfg = student(encoder).encoder.pretrained_cfg
    assert f"{cfg['architecture']}.{cfg['tag']}" == student(encoder).start_weights == AUTHORS_START_WEIGHTS[encoder]


@pytest.mark.parametrize("weights", ["gluon_in1k", "resnet18.gluon_in1k"])
def test_weights_tag_reaches_timm_and_the_architecture(weights):
    model = build_student("resnet18", weights=weights, **KITTI.depth_bins)
    assert model.encoder.pretrained_cfg["tag"] == "gluon_in1k" and model.start_weights == "resnet18.gluon_in1k"
    assert build_student(**model.arch).start_weights == "resnet18.gluon_in1k"


def test_any_timm_name_starts_from_timms_default_tag():
    assert build_student("resnet34", **KITTI.depth_bins).start_weights == "resnet34.a1_in1k"


@pytest.mark.parametrize(
    "weights, fragment",
    [
        (
            "no_such_tag",
            "--weights no_such_tag is not a pretrained tag timm has for resnet18; use one of resnet18.a1_in1k",
        ),
        ("resnet50.tv_in1k", "--weights resnet50.tv_in1k are weights of resnet50, not of the student's resnet18"),
    ],
)
def test_unknown_weights_tag_is_one_line(weights, fragment):
    with pytest.raises(ConfigError) as error:
        build_student("resnet18", weights=weights, **KITTI.depth_bins)
    assert str(error.value).startswith(fragment) and "\n" not in str(error.value)


def test_weights_tag_offline_names_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ConfigError, match=r"ImageNet weights for resnet18 \(resnet18.gluon_in1k\)"):
        build_student("resnet18", pretrained=True, weights="gluon_in1k", **KITTI.depth_bins)


def test_rebuilt_student_keeps_the_normalisation_of_its_weights():
    """resnet18d's default weights take ImageNet's mean and std, its ra4 weights 0.5: the tag is architecture."""
    model = build_student("resnet18d", weights="ra4_e3600_r224_in1k", **KITTI.depth_bins)
    assert build_student("resnet18d", **KITTI.depth_bins).normalisation["mean"] == pytest.approx(IMAGENET_MEAN)
    assert model.normalisation == build_student(**model.arch).normalisation == {"mean": [0.5] * 3, "std": [0.5] * 3}
