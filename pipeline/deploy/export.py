"""A trained student as a file that runs without tiekd: a ``torch.export`` program or an ONNX model.

The exported network is :class:`DeployedStudent`: the teacher contract of
:mod:`tiekd.pipeline.teachers.load`, so an exported student can teach another one. Input: RGB float32
in [0, 1], (B, 3, H, W) (the ImageNet normalisation is inside); output: depth in metres,
(B, 1, H, W), clamped to the student's range; with ``with_entropy`` a second output, the DPM
entropy (B, 1, H, W) in nats. H and W are fixed at export; the batch is fixed too unless
``dynamic_batch``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tiekd.pipeline.deploy.archive import check_archive
from tiekd.pipeline.dpm import depth_from_bins_last, dpm_entropy, expected_depth
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.teachers.onnx import onnx_session

ONNX_OPSET = 17
"""ONNX opset of exported students (onnxruntime >= 1.14 runs it)."""

DYNAMIC_BATCH_EXAMPLE = 2
"""Batch of the example input of a dynamic-batch export: torch.export specialises a size-1 dimension."""

MAX_DYNAMIC_BATCH = 1024
"""Upper bound torch.export is told for a dynamic batch."""

VERIFY_TOLERANCE = 1e-3
"""Largest relative depth difference accepted between an exported file and the checkpoint."""

VERIFY_SEED = 0
"""Seed of the random image the export check runs on."""

OUTPUT_NAMES = ("depth", "entropy")


class DeployedStudent(nn.Module):
    """A student behind the teacher contract: RGB [0, 1] (B, 3, H, W) -> depth (B, 1, H, W) metres.

    ``with_entropy`` (DPM students only) adds the DPM entropy (B, 1, H, W) in nats as a second output.
    A DPM head runs in its deployed form: the 1x1 convolution as a matrix product on channels-last
    features, so the bins lie on the last axis for the softmax (:func:`depth_from_bins_last`); the
    same numbers as the checkpoint's ``expected_depth`` over (B, K, H, W), several times faster in
    onnxruntime. ``input_size`` (H, W): the size the file is exported for; a ViT or DeiT encoder (a
    copy) then has its position embeddings resampled once to that size (:func:`fix_input_size`).
    """

    def __init__(self, student: nn.Module, *, with_entropy: bool = False, input_size: tuple[int, int] | None = None):
        super().__init__()
        if with_entropy and student.head != "dpm":
            raise ConfigError("--with-entropy needs a DPM student; this checkpoint has a regression head")
        self.student = student.eval() if input_size is None else fix_input_size(copy.deepcopy(student), input_size)
        self.with_entropy = with_entropy

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        student = self.student
        if student.head != "dpm":
            return student(image).clamp(student.min_depth, student.max_depth)
        features = student.decode(image)
        if features.shape[-2:] != image.shape[-2:]:  # only then: a crop is a copy in the exported graph
            features = features[..., : image.shape[-2], : image.shape[-1]]
        conv = student.output_conv
        logits = nn.functional.linear(features.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias)
        outputs = depth_from_bins_last(logits, student.bin_centres, with_entropy=self.with_entropy)
        depth, entropy = outputs if self.with_entropy else (outputs, None)
        depth = depth.permute(0, 3, 1, 2).clamp(student.min_depth, student.max_depth)
        return (depth, entropy.permute(0, 3, 1, 2)) if self.with_entropy else depth


def fix_input_size(student: nn.Module, size: tuple[int, int]) -> nn.Module:
    """``student`` (eval mode) with a ViT/DeiT encoder's position embeddings resampled to ``size``.

    Such encoders are built with timm's ``dynamic_img_size``: every call resamples the embeddings to
    the input with an antialiased bicubic filter, which ONNX (opset 17) cannot express. Resampled once
    here to the padded input the student's encoder sees (timm's ``set_input_size``, the same filter),
    the call finds them at the right size and skips the resample. Other encoders are left as they are.
    """
    model = getattr(student.encoder, "model", student.encoder)  # a ViT sits inside timm's FeatureGetterNet
    if getattr(model, "dynamic_img_size", False) and getattr(model, "pos_embed", None) is not None:
        multiple = student.input_multiple
        model.set_input_size(img_size=tuple(-(-side // multiple) * multiple for side in size))
    return student.eval()


def checkpoint_outputs(student: nn.Module, image: torch.Tensor, *, with_entropy: bool) -> list[np.ndarray]:
    """What the checkpoint's own (training-time) form computes for ``image``: depth clamped to the
    range [, DPM entropy], as NumPy arrays: the reference every exported file is checked against."""
    with torch.no_grad():
        output = student.eval()(image)
        if student.head != "dpm":
            return [output.clamp(student.min_depth, student.max_depth).numpy()]
        depth = expected_depth(output, student.bin_centres).clamp(student.min_depth, student.max_depth)
        return [depth.numpy(), dpm_entropy(output).numpy()] if with_entropy else [depth.numpy()]


def example_image(size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """A reproducible random RGB image (batch, 3, *size) in [0, 1]: the export's example and check input."""
    generator = torch.Generator().manual_seed(VERIFY_SEED)
    return torch.rand(batch, 3, *size, generator=generator)


def export_program(model: DeployedStudent, path: Path, size: tuple[int, int], *, dynamic_batch: bool) -> None:
    """Write ``torch.export.export(model)`` for inputs of ``size`` with ``torch.export.save``."""
    batch = DYNAMIC_BATCH_EXAMPLE if dynamic_batch else 1
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {"image": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}
    with torch.no_grad():
        program = torch.export.export(model, (example_image(size, batch),), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))


def export_onnx(model: DeployedStudent, path: Path, size: tuple[int, int], *, dynamic_batch: bool) -> None:
    """Write an ONNX model (opset :data:`ONNX_OPSET`, input ``image``, outputs ``depth`` [, ``entropy``]).

    Uses torch's TorchScript-based exporter, which needs no package beyond ``onnx``.
    """
    outputs = list(OUTPUT_NAMES[: 2 if model.with_entropy else 1])
    axes = {name: {0: "batch"} for name in ["image", *outputs]} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            (example_image(size),),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=axes,
        )


def run_onnx(path: Path, image: torch.Tensor) -> list[np.ndarray]:
    """The outputs of an exported ONNX student for ``image`` (B, 3, H, W), on the CPU."""
    session = onnx_session(path, cuda=False)
    return session.run(None, {session.get_inputs()[0].name: image.numpy()})


def onnx_runner(path: Path):
    """``run(x) -> first output`` of an ONNX student on the CPU, for NumPy inputs (1, 3, H, W)."""
    session = onnx_session(path, cuda=False)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def run_program(path: Path, image: torch.Tensor) -> list[np.ndarray]:
    """The outputs of a saved ``torch.export`` program for ``image`` (the archive checked as for
    ``export:`` teachers first)."""
    check_archive(path)
    with torch.no_grad():
        outputs = torch.export.load(str(path)).module()(image)
    return [o.numpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))]


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / |want| over all values (depths are >= min_depth > 0)."""
    return float(np.max(np.abs(got.astype(np.float64) - want) / np.abs(want.astype(np.float64))))


def entropy_difference(got: np.ndarray, want: np.ndarray, n_bins: int) -> float:
    """max |got - want| / log K: entropy differences relative to the entropy's range [0, log K] nats
    (an entropy itself can be 0, so relative to the value is no measure)."""
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.log(n_bins))
