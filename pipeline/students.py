"""Student networks: a timm encoder, a DenseDepth-style decoder and a DPM or regression head.

Method.md section 4. A student maps an RGB image (B, 3, H, W) in [0, 1] to either

- ``head="dpm"``: logits (B, K, H, W) over the K depth bins; softmax over dim 1 is the student's
  Depth Probability Map and its expected bin centre is the depth (:meth:`DepthStudent.predict_depth`);
- ``head="regression"``: depth (B, 1, H, W) in metres, sigmoid(conv) * max_depth (baselines).

The encoder is any timm model created with ``features_only=True``; the decoder reads its input
widths and strides from ``feature_info``, so no encoder is special-cased in code. Families built for
one input size (ViT, DeiT, Swin) are created with timm's ``dynamic_img_size=True``; an encoder that
still runs at one size only is refused in one line when the student is built. Decoder, after
DenseDepth (Alhashim & Wonka 2018, https://arxiv.org/abs/1812.11941) as in the authors' code
(``depth/models/decode_heads/densedepth_head_dpm_resnet.py``), without normalisation layers:

1. deepest feature -> 1x1 conv (no activation);
2. for each shallower feature, deepest first: bilinear upsample (align_corners=True) to its size,
   concatenate, two 3x3 conv + ReLU;
3. x2 upsample blocks (bilinear, two 3x3 conv 128->128 + ReLU) until the input resolution
   (log2 of the shallowest feature's reduction: two for MobileNetV2 at 1/4, one for ResNets at 1/2).

Decoder widths (output channels of steps 1 and 2, deepest first). The general rule is DenseDepth's:
the 1x1 conv keeps the deepest feature's width and every fusion halves it, never below 128, the
last fusion always 128. It reproduces the authors' ResNet-50 decoder exactly. The authors chose
other widths by hand for MobileNetV2 (2048 after the 320-channel feature) and ResNet-18, and no
rule on the channel counts gives all three, so those presets state the authors' widths
(``configs/_base_/models/densedepth_*.py`` of github.com/HPC-Lab-KOREATECH/TIE-KD). With them the
students have the authors' parameter counts (classifier-free encoder + decoder + DPM head, K = 257):
MobileNetV2 17,646,465, ResNet-18 16,487,617, ResNet-50 78,097,857. The MobileNetV2 preset also has
the authors' dilations block by block (:data:`MOBILENETV2_DILATIONS`), which timm's
``output_stride=8`` alone does not give.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from tiekd.pipeline.dpm import bin_centres, bin_edges, expected_depth
from tiekd.pipeline.errors import ConfigError

# Width of the last fusion, of the x2 upsample blocks and of the head input (authors' channels=128).
DECODER_WIDTH = 128
# Each upsample block doubles the resolution.
UPSAMPLE_FACTOR = 2
HEADS = ("dpm", "regression")
DECODERS = ("standard", "light")
"""``standard``: the authors' decoder. ``light``: the general width rule for the fusions (no hand-set
2048-channel bottleneck) and x2 upsample blocks that halve the width each time, so the
full-resolution convolutions and the head run at 128 / 2^n channels (MobileNetV2: 32 instead of
128); bench/bench_student.py measures what that saves."""
# Probe input of check_any_input_size, in multiples of the encoder's input multiple: small and not
# square, so it differs from the square size a fixed-size model was built for.
PROBE_MULTIPLES = (2, 3)

MOBILENETV2_DILATIONS = ((1,), (1, 1), (1, 1, 1), (2, 1, 1, 1), (2, 1, 1), (4, 1, 1), (4,))
"""Depthwise-conv dilation of every block of the authors' MobileNetV2, stage by stage (timm's
``blocks.i.j``). mmseg's ``MobileNetV2.make_layer`` (the authors' ``mobilenet_v2_base.py``) gives a
dilated stage's dilation to its FIRST block only (``dilation if i == 0 else 1``); timm's
``output_stride=8`` dilates every block after the first instead (1,2,2,2 / 2,2,2 / 2,4,4 / 4)."""

# Named students: timm model name, the timm pretrained tag of the start weights, timm feature options
# and, where the authors departed from the general width rule, their decoder widths (deepest first;
# the first is the 1x1 conv's width). Start weights: the authors' ResNets start from torchvision's v1
# ImageNet weights (mmseg's `torchvision://resnet18`), which timm ships as `tv_in1k`; their MobileNetV2
# starts from `mmcls://mobilenet_v2`, which timm lacks: `ra_in1k` (timm's RandAugment recipe) is the
# only ImageNet-1k tag timm has for mobilenetv2_100.
STUDENTS = {
    # Authors' MobileNetV2: output stride 8 (strides (1,2,2,1,1,1,1), dilations (1,1,1,2,2,4,4)),
    # features 24@1/4, 32@1/8, 96@1/8, 320@1/8; decoder up_sample_channels [128, 256, 512, 2048];
    # depthwise dilations per block as mmseg's make_layer gives them (MOBILENETV2_DILATIONS).
    "mobilenetv2": dict(
        model="mobilenetv2_100",
        weights="ra_in1k",
        output_stride=8,
        out_indices=(1, 2, 3, 4),
        decoder_widths=(2048, 512, 256, 128),
        block_dilations=MOBILENETV2_DILATIONS,
    ),
    # Stem 64@1/2 and four stages; authors' up_sample_channels [128, 128, 256, 256, 512].
    "resnet18": dict(model="resnet18", weights="tv_in1k", decoder_widths=(512, 256, 256, 128, 128)),
    # Stem and four stages; the general rule gives the authors' [128, 256, 512, 1024, 2048].
    "resnet50": dict(model="resnet50", weights="tv_in1k"),
}


def decoder_widths(channels: list[int]) -> list[int]:
    """General width rule: (deepest channels, then halving, floor 128, last 128), deepest first.

    ``channels`` are the encoder's feature widths, shallowest first (timm order).
    """
    widths = [channels[-1]]
    for _ in channels[:-1]:
        widths.append(max(DECODER_WIDTH, widths[-1] // 2))
    widths[-1] = DECODER_WIDTH
    return widths


def conv_relu_pair(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions (same padding), each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


def upsample_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, *size) with align_corners=True (identity if equal)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class FusionBlock(nn.Module):
    """Upsample the decoder state to a skip feature's size, concatenate, two 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = conv_relu_pair(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) and skip (B, C_skip, H', W') -> (B, C_out, H', W')."""
        return self.convs(torch.cat([upsample_to(x, skip.shape[-2:]), skip], dim=1))


class UpsampleBlock(nn.Module):
    """x2 bilinear upsample (align_corners=True), two 3x3 conv + ReLU (constant width by default)."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.convs = conv_relu_pair(channels, out_channels or channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, 2h, 2w)."""
        size = (x.shape[-2] * UPSAMPLE_FACTOR, x.shape[-1] * UPSAMPLE_FACTOR)
        return self.convs(upsample_to(x, size))


class DenseDepthDecoder(nn.Module):
    """Encoder features (shallowest first) -> (B, 128, H, W) at the input resolution."""

    def __init__(self, channels: list[int], shallowest_reduction: int, widths: list[int], *, halve_upsamples=False):
        super().__init__()
        if len(widths) != len(channels) or widths[-1] != DECODER_WIDTH:
            raise ConfigError(f"Decoder widths {widths} must give one width per encoder feature and end at 128.")
        n_upsample = math.log2(shallowest_reduction)
        if not n_upsample.is_integer():
            raise ConfigError(f"The encoder's shallowest feature is at 1/{shallowest_reduction}: not a power of 2.")
        skips = channels[-2::-1]
        self.bottleneck = nn.Conv2d(channels[-1], widths[0], kernel_size=1)
        self.fusions = nn.ModuleList(
            FusionBlock(width_in, skip, width_out) for width_in, skip, width_out in zip(widths, skips, widths[1:])
        )
        # Output width of each x2 block: 128 throughout, or halved by every block (light decoder).
        out = [DECODER_WIDTH // (2 ** (i + 1) if halve_upsamples else 1) for i in range(int(n_upsample))]
        self.upsamples = nn.ModuleList(UpsampleBlock(w_in, w_out) for w_in, w_out in zip([DECODER_WIDTH] + out, out))
        self.out_channels = out[-1] if out else DECODER_WIDTH

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Features shallowest first, each (B, C_i, H / r_i, W / r_i) -> (B, 128, H, W)."""
        x = self.bottleneck(features[-1])
        for fusion, skip in zip(self.fusions, features[-2::-1]):
            x = fusion(x, skip)
        for upsample in self.upsamples:
            x = upsample(x)
        return x


class DepthStudent(nn.Module):
    """Encoder + decoder + head; takes RGB in [0, 1] and normalises it inside the model.

    Build it with :func:`build_student`; ``build_student(**student.arch)`` rebuilds the same
    architecture (a checkpoint stores ``arch``).
    """

    def __init__(self, encoder: nn.Module, widths: list[int], arch: dict):
        super().__init__()
        self.arch = dict(arch)
        self.head = arch["head"]
        self.min_depth, self.max_depth = arch["min_depth"], arch["max_depth"]
        info = encoder.feature_info
        self.encoder = encoder
        light = arch.get("decoder", "standard") == "light"
        self.decoder = DenseDepthDecoder(info.channels(), info.reduction()[0], widths, halve_upsamples=light)
        width = self.decoder.out_channels
        # H and W of the input must be multiples of the encoder's largest reduction.
        self.input_multiple = max(info.reduction())
        self.channels_last_features = getattr(encoder, "output_fmt", "NCHW") == "NHWC"
        cfg = getattr(encoder, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if self.head == "dpm":
            self.output_conv = nn.Conv2d(width, arch["n_bins"], kernel_size=1)
            edges = bin_edges(self.min_depth, self.max_depth, arch["n_bins"])
            self.register_buffer("bin_centres", bin_centres(edges), persistent=False)
        else:
            self.output_conv = nn.Conv2d(width, 1, kernel_size=3, padding=1)

    @property
    def start_weights(self) -> str | None:
        """timm name with pretrained tag of the encoder's weights before training (e.g.
        ``resnet18.tv_in1k``), loaded or not; None for an encoder without a pretrained config."""
        cfg = getattr(self.encoder, "pretrained_cfg", None) or {}
        return ".".join(part for part in (cfg.get("architecture"), cfg.get("tag")) if part) or None

    @property
    def normalisation(self) -> dict[str, list[float]]:
        """Per-channel mean and std applied to the [0, 1] input (the encoder's pretraining values)."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> DPM logits (B, K, H, W), or depth (B, 1, H, W) in metres.

        Any H and W: :meth:`decode` pads the input, the output is cropped back (every pixel keeps its place)."""
        output = self.output_conv(self.decode(image))[..., : image.shape[-2], : image.shape[-1]]
        if self.head == "regression":
            return torch.sigmoid(output) * self.max_depth
        return output

    def decode(self, image: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> the head's input (B, C, H', W'): the normalised image padded at the
        bottom and right (edge values) to multiples of :attr:`input_multiple`, through encoder and decoder."""
        pad_h, pad_w = (-size % self.input_multiple for size in image.shape[-2:])
        x = (image - self.mean) / self.std
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.decoder(self.features(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised, padded image (B, 3, H, W) -> encoder features, shallowest first, each (B, C_i, h_i, w_i).

        Some timm encoders (Swin) give channels-last features; they are permuted to channels-first.
        """
        features = self.encoder(x)
        if self.channels_last_features:
            features = [feature.permute(0, 3, 1, 2) for feature in features]
        return features

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, H, W) in [0, 1] -> depth (B, 1, H, W) in metres within [min_depth, max_depth].

        DPM head: the expected bin centre of softmax(logits). Gradients flow; wrap in no_grad to infer.
        """
        output = self(image)
        depth = expected_depth(output, self.bin_centres) if self.head == "dpm" else output
        return depth.clamp(self.min_depth, self.max_depth)


def create_encoder(encoder: str, *, pretrained: bool, weights: str | None = None) -> tuple[nn.Module, list[int] | None]:
    """timm ``features_only`` encoder for a preset name or a timm model name, and preset widths.

    ``weights``: timm pretrained tag of the start weights, ``tag`` or ``model.tag``; None = the
    preset's, or timm's default for other names. The tag also sets the input normalisation
    (``pretrained_cfg``) even when ``pretrained`` is False. Raises ConfigError for an unknown name
    or tag, or when the ImageNet weights cannot be fetched.
    """
    options = dict(STUDENTS.get(encoder, {"model": encoder}))
    model_name = options.pop("model")
    widths = options.pop("decoder_widths", None)
    dilations = options.pop("block_dilations", None)
    if not timm.is_model(model_name):
        raise ConfigError(
            f"Unknown student encoder {encoder!r}: use one of {', '.join(STUDENTS)} or a timm model name."
        )
    preset_weights = options.pop("weights", None)
    tagged = start_weights_name(model_name, weights or preset_weights)
    try:
        module = _create_features_model(tagged, pretrained=pretrained, options=options)
    except OSError as error:
        raise ConfigError(
            f"The ImageNet weights for {encoder} ({tagged}) could not be downloaded; pass --no-pretrained "
            "(or pre-populate the Hugging Face / timm cache)."
        ) from error
    if dilations is not None:
        set_block_dilations(module, dilations)
    return module, None if widths is None else list(widths)


def start_weights_name(model_name: str, weights: str | None) -> str:
    """``model_name.tag`` for a pretrained tag given as ``tag`` or ``model_name.tag`` (None: the bare
    model name, timm's default tag); ConfigError for a tag timm has no weights under."""
    if weights is None:
        return model_name
    architecture, _, tag = weights.rpartition(".")
    if architecture not in ("", model_name):
        raise ConfigError(f"--weights {weights} are weights of {architecture}, not of the student's {model_name}")
    tagged = f"{model_name}.{tag}"
    available = timm.list_pretrained(f"{model_name}.*")
    if tagged not in available:
        raise ConfigError(
            f"--weights {weights} is not a pretrained tag timm has for {model_name}; "
            f"use one of {', '.join(available) or '(none: pass --no-pretrained)'}"
        )
    return tagged


def _create_features_model(model_name: str, *, pretrained: bool, options: dict) -> nn.Module:
    """timm ``features_only`` model; families built for one input size (ViT, DeiT, Swin) are asked
    for ``dynamic_img_size=True`` (position embeddings and attention masks follow the input), a
    keyword every other family refuses with a TypeError before any weight is loaded."""
    try:
        return timm.create_model(model_name, features_only=True, pretrained=pretrained, dynamic_img_size=True, **options)
    except TypeError as error:
        if "dynamic_img_size" not in str(error):
            raise
    return timm.create_model(model_name, features_only=True, pretrained=pretrained, **options)


def check_any_input_size(student: DepthStudent, encoder: str) -> None:
    """Refuse, in one line, an encoder that only runs at the input size it was built for.

    Probes one non-square input of PROBE_MULTIPLES times the encoder's input multiple, in eval mode
    without gradients (BatchNorm statistics are left untouched).
    """
    height, width = (student.input_multiple * factor for factor in PROBE_MULTIPLES)
    training = student.training
    try:
        with torch.no_grad():
            student.eval()(torch.zeros(1, 3, height, width))
    except (AssertionError, RuntimeError) as error:
        raise ConfigError(
            f"Student encoder {encoder!r} only runs at the input size it was built for ({str(error).splitlines()[0]}); "
            "use a CNN (resnet*, efficientnet_*, convnext_*, mobilenetv*) or a ViT, DeiT or Swin model."
        ) from error
    finally:
        student.train(training)


def set_block_dilations(encoder: nn.Module, dilations: tuple[tuple[int, ...], ...]) -> None:
    """Give block j of stage i of a timm MobileNet/EfficientNet encoder depthwise dilation
    ``dilations[i][j]`` (padding equal to it: same size for a 3x3 kernel at stride 1).

    Weights and strides are untouched: only where the 3x3 depthwise kernel samples changes.
    """
    stages = encoder.blocks
    if [len(stage) for stage in stages] != [len(stage) for stage in dilations]:
        raise ConfigError(f"Dilation table {dilations} does not match the encoder's blocks.")
    for stage, stage_dilations in zip(stages, dilations):
        for block, dilation in zip(stage, stage_dilations):
            conv = block.conv_dw
            padding = dilation * (conv.kernel_size[0] - 1) // 2
            conv.dilation, conv.padding = (dilation, dilation), (padding, padding)


def _check_head(head: str, decoder: str, *, n_bins: int, min_depth: float, max_depth: float) -> None:
    """Refuse an unknown head or decoder and bins that cannot be."""
    if head not in HEADS:
        raise ConfigError(f"Unknown student head {head!r}; use one of {', '.join(HEADS)}.")
    if decoder not in DECODERS:
        raise ConfigError(f"Unknown --decoder {decoder!r}; use one of {', '.join(DECODERS)}.")
    if not 0 < min_depth < max_depth or n_bins < 2:
        raise ConfigError(
            f"Depth bins need 0 < min_depth < max_depth and n_bins >= 2; got min_depth {min_depth}, "
            f"max_depth {max_depth}, n_bins {n_bins}."
        )


def build_student(
    encoder: str,
    *,
    head: str = "dpm",
    n_bins: int,
    min_depth: float,
    max_depth: float,
    pretrained: bool = False,
    decoder: str = "standard",
    weights: str | None = None,
) -> DepthStudent:
    """A student: ``encoder`` is a key of :data:`STUDENTS` or any timm model name.

    Args:
        head: ``"dpm"`` (logits over ``n_bins`` uniform bins on [min_depth, max_depth]) or
            ``"regression"`` (sigmoid depth scaled to max_depth).
        n_bins: number K of depth bins of the DPM head.
        min_depth, max_depth: depth range in metres.
        pretrained: load timm's ImageNet weights into the encoder.
        decoder: ``"standard"`` (the authors') or ``"light"`` (see :data:`DECODERS`).
        weights: timm pretrained tag of the start weights (see :func:`create_encoder`); None = the preset's.
    """
    _check_head(head, decoder, n_bins=n_bins, min_depth=min_depth, max_depth=max_depth)
    module, widths = create_encoder(encoder, pretrained=pretrained, weights=weights)
    if widths is None or decoder == "light":
        widths = decoder_widths(module.feature_info.channels())
    arch = dict(encoder=encoder, head=head, n_bins=int(n_bins), min_depth=float(min_depth), max_depth=float(max_depth))
    if decoder != "standard":  # only then: checkpoints of the standard decoder keep their architecture dict
        arch["decoder"] = decoder
    if weights is not None:  # the tag sets the input normalisation: a rebuild needs it
        arch["weights"] = weights
    student = DepthStudent(module, widths, arch)
    check_any_input_size(student, encoder)
    return student
