"""The authors' student, block by block: MobileNetV2 dilations, decoder wiring, heads.

Each test compares with an independent statement of the authors' network (mmseg's ``make_layer``
rule, a float64 re-implementation of the decoder with a NumPy bilinear resize), so a drifted
dilation, a lost bias, a 1x1 head or ``align_corners=False`` fails here.
"""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiekd.data.kitti import KITTI
from tiekd.pipeline.students import DenseDepthDecoder, build_student

# mmseg MobileNetV2 (the authors' backbone): blocks per stage, stride and dilation per stage.
MMSEG_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
MMSEG_STRIDES = (1, 2, 2, 1, 1, 1, 1)
MMSEG_DILATIONS = (1, 1, 1, 2, 2, 4, 4)
STEM_STRIDE = 2
# Receptive-field probe: input side (pixels) larger than the network's receptive field.
PROBE_SIZE = 384


def make_layer_table():
    """(stride, dilation) per block, mmseg's make_layer: both go to the first block of a stage only."""
    return [
        [(stride if i == 0 else 1, dilation if i == 0 else 1) for i in range(blocks)]
        for blocks, stride, dilation in zip(MMSEG_BLOCKS, MMSEG_STRIDES, MMSEG_DILATIONS)
    ]


@functools.cache
def mobilenet():
    torch.manual_seed(0)
    return build_student("mobilenetv2", **KITTI.depth_bins).eval()


def test_mobilenetv2_blocks_match_mmseg_make_layer():
    stages = mobilenet().encoder.blocks
    table = make_layer_table()
    assert [len(stage) for stage in stages] == [len(row) for row in table]
    for i, (stage, row) in enumerate(zip(stages, table)):
        for j, (block, (stride, dilation)) in enumerate(zip(stage, row)):
            conv = block.conv_dw
            assert conv.kernel_size == (3, 3), f"blocks.{i}.{j}"
            assert conv.stride == (stride, stride), f"blocks.{i}.{j}"
            assert conv.dilation == (dilation, dilation), f"blocks.{i}.{j}"
            assert conv.padding == (dilation, dilation), f"blocks.{i}.{j}"


def analytic_receptive_field() -> int:
    """Receptive field (pixels) of the deepest feature: stem 3x3 s2, then each block's 3x3 depthwise."""
    field, jump = 3, STEM_STRIDE
    for row in make_layer_table():
        for stride, dilation in row:
            field += 2 * dilation * jump
            jump *= stride
    return field


def test_mobilenetv2_receptive_field_is_the_authors():
    """The dilations are used: the deepest feature's centre pixel sees exactly the analytic field."""
    image = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    image.requires_grad_(True)
    model = mobilenet()
    deepest = model.encoder((image - model.mean) / model.std)[-1]
    centre = deepest.shape[-1] // 2
    deepest[0, :, centre, centre].sum().backward()
    columns = image.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    assert int(columns.max() - columns.min()) + 1 == analytic_receptive_field() == 363


def bilinear_align_corners(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NumPy bilinear resize of (B, C, h, w) with align_corners=True: output i samples i (h-1)/(H-1)."""

    def axis_weights(n_in, n_out):
        source = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        low = np.clip(np.floor(source).astype(int), 0, n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        matrix = np.zeros((n_out, n_in))
        matrix[np.arange(n_out), low] += 1 - (source - low)
        matrix[np.arange(n_out), high] += source - low
        return matrix

    rows, cols = axis_weights(x.shape[2], size[0]), axis_weights(x.shape[3], size[1])
    return np.einsum("Hh,bchw,Ww->bcHW", rows, x, cols)


def conv3x3_relu(x, conv):
    """Reference 3x3 conv (bias required) + ReLU in float64."""
    assert conv.kernel_size == (3, 3) and conv.bias is not None
    return F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))


def reference_decoder(decoder, features):
    """The authors' decoder written out: 1x1, then per skip resize + concat + two 3x3 + ReLU, then x2 blocks."""
    assert decoder.bottleneck.kernel_size == (1, 1) and decoder.bottleneck.bias is not None
    x = F.conv2d(features[-1], decoder.bottleneck.weight, decoder.bottleneck.bias)
    resize = lambda t, size: torch.from_numpy(bilinear_align_corners(t.detach().numpy(), size))  # noqa: E731
    for fusion, skip in zip(decoder.fusions, features[-2::-1]):
        x = torch.cat([resize(x, skip.shape[-2:]), skip], dim=1)
        x = conv3x3_relu(conv3x3_relu(x, fusion.convs[0]), fusion.convs[2])
    for block in decoder.upsamples:
        x = resize(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        x = conv3x3_relu(conv3x3_relu(x, block.convs[0]), block.convs[2])
    return x


def test_decoder_matches_the_written_out_reference():
    torch.manual_seed(0)
    channels, widths = [3, 5, 7], [16, 8, 128]
    decoder = DenseDepthDecoder(channels, 2, widths).double()
    for conv in decoder.modules():
        if isinstance(conv, torch.nn.Conv2d):  # non-zero biases, so a dropped bias shows
            torch.nn.init.uniform_(conv.bias, -0.5, 0.5)
    generator = torch.Generator().manual_seed(1)
    features = [
        torch.rand(1, c, 12 // 2**i, 20 // 2**i, dtype=torch.float64, generator=generator) for i, c in enumerate(channels)
    ]
    with torch.no_grad():
        torch.testing.assert_close(decoder(features), reference_decoder(decoder, features), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("encoder", ["mobilenetv2", "resnet18"])
def test_regression_head_is_a_3x3_conv_with_bias(encoder):
    """depth = sigmoid(3x3 conv 128 -> 1) * d_max: a pixel's depth depends on its neighbours' features."""
    model = build_student(encoder, head="regression", **KITTI.depth_bins).eval()
    head = model.output_conv
    assert head.kernel_size == (3, 3) and head.padding == (1, 1) and head.bias is not None
    features = torch.rand(1, 128, 6, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    head(features)[0, 0, 3, 3].backward()
    assert (features.grad[0].abs().sum(0) > 0).sum() == 9
