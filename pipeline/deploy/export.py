"""A trained student as a file that runs without tiekd: a ``torch.export`` program or an ONNX model.

The exported network is :class:`DeployedStudent`: the teacher contract of
:mod:`tiekd.pipeline.teachers.load`, so an exported student can teach another one. Input: RGB float32
in [0, 1], (B, 3, H, W) (the ImageNet normalisation is inside); output: depth in metres,
(B, 1, H, W), clamped to the student's range; with ``with_entropy`` a second output, the DPM
entropy (B, 1, H, W) in nats. H and W are fixed at export; the batch is fixed too unless
``dynamic_batch``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tiekd.pipeline.deploy.archive import check_archive
from tiekd.pipeline.dpm import dpm_entropy, expected_depth
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
    """

    def __init__(self, student: nn.Module, *, with_entropy: bool = False):
        super().__init__()
        if with_entropy and student.head != "dpm":
            raise ConfigError("--with-entropy needs a DPM student; this checkpoint has a regression head")
        self.student = student.eval()
        self.with_entropy = with_entropy

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        output = self.student(image)
        if self.student.head != "dpm":
            return output.clamp(self.student.min_depth, self.student.max_depth)
        depth = expected_depth(output, self.student.bin_centres).clamp(self.student.min_depth, self.student.max_depth)
        return (depth, dpm_entropy(output)) if self.with_entropy else depth


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
