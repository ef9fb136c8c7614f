"""``onnx:PATH`` teachers: an ONNX depth network run by onnxruntime behind the teacher contract.

The model takes RGB float32 in [0, 1], (B, 3, H, W) (its first input), and gives depth in metres,
(B, 1, H, W) or (B, H, W) (its first output), like every teacher. onnxruntime runs it on CUDA
when it offers the CUDA provider (``onnxruntime-gpu``; ``--teacher-arg cuda=false`` keeps it on
the CPU), else on the CPU. A model exported with a fixed batch is called once per slice of that
size (the last slice padded), so flip TTA (which doubles the batch) works with it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.files import file_sha256, require_file

ONNX_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
"""onnxruntime's input type names -> the NumPy dtype fed to them."""


def onnx_session(path: str | Path, *, cuda: bool = True, threads: int | None = None):
    """An onnxruntime session: CUDA first when ``cuda`` and onnxruntime offers it, then the CPU
    with ``threads`` intra-op threads (default: onnxruntime's choice)."""
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


class OnnxTeacher(nn.Module):
    """An onnxruntime session as a module: image (B, 3, H, W) in [0, 1] -> depth, on the image's device."""

    def __init__(self, session, *, spec: str):
        super().__init__()
        self.session = session
        first = session.get_inputs()[0]
        if first.type not in ONNX_FLOAT_TYPES:
            raise TeacherError(f"--teacher {spec}: the model's input is {first.type}; a float image input is needed")
        self.input_name, self.input_dtype = first.name, ONNX_FLOAT_TYPES[first.type]
        self.output_name = session.get_outputs()[0].name
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: images})[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        images = image.detach().cpu().numpy().astype(self.input_dtype)
        if self.fixed_batch is None:
            depth = self._run(images)
        else:  # chunks of the fixed batch, the last one padded by repeating its final image
            depth = []
            for start in range(0, len(images), self.fixed_batch):
                chunk = images[start : start + self.fixed_batch]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - len(chunk), axis=0)])
                depth.append(self._run(padded)[: len(chunk)])
            depth = np.concatenate(depth)
        return torch.from_numpy(np.asarray(depth, dtype=np.float32)).to(image.device)


def load_onnx(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    """Loader of the teacher-kind table: (module, SHA-256 of the .onnx file)."""
    path = require_file(target, what="teacher file", error=TeacherError, hint=f" (--teacher {spec})")
    unknown = set(args) - {"cuda"}
    if unknown:
        raise TeacherError(f"--teacher {spec}: onnx teachers take only --teacher-arg cuda=true|false, not {unknown}")
    return OnnxTeacher(onnx_session(path, cuda=bool(args.get("cuda", True))), spec=spec), file_sha256(path)
