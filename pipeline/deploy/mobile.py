"""A student as an ExecuTorch program (``.pte``) for phones and edge devices, run here on the CPU.

``torch.export`` of :class:`~tiekd.pipeline.deploy.export.DeployedStudent`, lowered to ExecuTorch
with the XNNPACK backend (the CPU backend ExecuTorch ships for Arm and x86), fixed input size and
batch 1. Needs the optional ``executorch`` package (``pip install tiekd[mobile]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiekd.pipeline.errors import ConfigError


def _executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError as error:
        raise ConfigError("--format executorch needs the executorch package: pip install 'tiekd[mobile]'") from error
    return XnnpackPartitioner, to_edge_transform_and_lower, Runtime


def export_executorch(model: torch.nn.Module, path: Path, size: tuple[int, int], *, dynamic_batch: bool) -> None:
    """Write ``model`` for a (1, 3, *size) input as an ExecuTorch program delegated to XNNPACK."""
    if dynamic_batch:
        raise ConfigError("--format executorch exports a batch of 1; leave out --dynamic")
    partitioner, lower, _ = _executorch()
    from tiekd.pipeline.deploy.export import example_image  # the one example image of every format

    with torch.no_grad():
        program = torch.export.export(model, (example_image(size),))
    path.write_bytes(lower(program, partitioner=[partitioner()]).to_executorch().buffer)


def run_executorch(path: Path, image: torch.Tensor) -> list[np.ndarray]:
    """The outputs of an ExecuTorch student for ``image`` (1, 3, H, W), run by ExecuTorch's runtime here."""
    *_, runtime = _executorch()
    method = runtime.get().load_program(str(path)).load_method("forward")
    return [output.numpy() for output in method.execute([image.contiguous()])]
