"""``--decoder light``: fewer channels at full resolution, same contract; the default untouched."""

import pytest
import torch

from tiekd.data.kitti import KITTI
from tiekd.pipeline.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from tiekd.pipeline.students import build_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("encoder, head_width", [("mobilenetv2", 32), ("resnet18", 64)])
def test_light_decoder_shapes_and_widths(encoder, head_width):
    standard, light = build_student(encoder, **KITTI.depth_bins), build_student(encoder, decoder="light", **KITTI.depth_bins)
    assert "decoder" not in standard.arch and light.arch["decoder"] == "light"
    assert standard.output_conv.in_channels == 128 and light.output_conv.in_channels == head_width
    assert parameters(light) < parameters(standard)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert light(image).shape == standard(image).shape == (1, 257, 64, 96)
        depth = light.predict_depth(image)
    assert depth.shape == (1, 1, 64, 96) and depth.min() >= 1e-3 and depth.max() <= 80.0


def test_mobilenetv2_light_widths():
    """General width rule for the fusions (320 -> 160 -> 128 -> 128), then 64 at 1/2 and 32 at full size."""
    decoder = build_student("mobilenetv2", decoder="light", **KITTI.depth_bins).decoder
    assert decoder.bottleneck.out_channels == 320
    assert [f.convs[0].out_channels for f in decoder.fusions] == [160, 128, 128]
    assert [u.convs[2].out_channels for u in decoder.upsamples] == [64, 32]


def test_checkpoint_round_trip(tmp_path):
    model = build_student("resnet18", decoder="light", head="regression", **KITTI.depth_bins)
    save_checkpoint(tmp_path / "c.pt", {"model": model.state_dict(), "architecture": model.arch})
    loaded = student_from_checkpoint(load_checkpoint(tmp_path / "c.pt"))
    assert loaded.arch == model.arch and parameters(loaded) == parameters(model)


def test_unknown_decoder():
    from tiekd.pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="--decoder"):
        build_student("resnet18", decoder="tiny", **KITTI.depth_bins)
