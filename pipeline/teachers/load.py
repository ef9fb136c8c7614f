"""Teachers: any depth network behind one contract.

A teacher is an ``nn.Module`` that takes the KB-cropped RGB image as float32 in [0, 1], shape
(B, 3, H, W), and returns metric depth in metres, (B, 1, H, W) or (B, H, W). Specs:

- ``export:PATH``       a ``torch.export`` program (``torch.export.save``)
- ``torchscript:PATH``  a TorchScript module (``torch.jit.save``)
- ``python:pkg.module:factory``  a factory returning an ``nn.Module`` (keyword args via --teacher-arg)
- ``hf:MODEL_ID_OR_DIR``  a transformers depth-estimation model with its image processor (:mod:`tiekd.pipeline.teachers.hf`)
- ``checkpoint:PATH``   a tiekd checkpoint (architecture and normalisation from the file)
- ``onnx:PATH``         an ONNX model run by onnxruntime (:mod:`tiekd.pipeline.teachers.onnx`)
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tiekd.pipeline.deploy.archive import load_exported
from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.files import file_sha256, require_file, state_dict_sha256
from tiekd.pipeline.teachers.hf import load_hf
from tiekd.pipeline.teachers.onnx import load_onnx

TEACHER_KINDS = ("export", "torchscript", "python", "hf", "checkpoint", "onnx")


@dataclass
class Teacher:
    """A loaded teacher, ready for inference on one device."""

    spec: str
    module: nn.Module
    weights_sha256: str | None
    """SHA-256 of the weights file, or of the state dict where there is no single file."""
    default_name: str
    """Group name in the store when --name is not given."""
    dtype: str | None = None
    """dtype of the teacher's floating-point weights ("float32"), None where it has none."""
    input_scale: float | None = None
    """The scale of the crop the teacher was trained at (a ``checkpoint:`` teacher's); None = unknown."""
    fixed_input: tuple[int, int] | None = None
    """The only (H, W) the teacher accepts (an ``export:`` program exported at a fixed size); None = any."""

    def native_input(self, crop: tuple[int, int]) -> tuple[int, int] | None:
        """(H, W) the teacher was trained to see for a crop of ``crop`` (H, W); None = the crop itself."""
        if self.input_scale is None or self.input_scale == 1.0:
            return None
        return max(1, round(crop[0] * self.input_scale)), max(1, round(crop[1] * self.input_scale))


def parse_teacher_args(pairs: tuple[str, ...] | list[str]) -> dict:
    """``["k=v", ...]`` -> ``{k: v}``; values are JSON where they parse (``3``, ``true``), else text."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise TeacherError(f"--teacher-arg {pair!r} is not of the form name=value")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def default_name(spec: str) -> str:
    """A store group name derived from a spec: the file stem, model name or factory name."""
    kind, _, target = spec.partition(":")
    tail = target.rstrip("/").rsplit(":", 1)[-1] if kind == "python" else Path(target.rstrip("/")).name
    stem = tail.split(".")[0] if kind in ("export", "torchscript", "checkpoint", "onnx") else tail
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or kind


def _existing_file(target: str, spec: str) -> Path:
    return require_file(target, what="teacher file", error=TeacherError, hint=f" (--teacher {spec})")


def _load_export(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    path = _existing_file(target, spec)
    return load_exported(path), file_sha256(path)


def _load_torchscript(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    path = _existing_file(target, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated", on every load
        return torch.jit.load(str(path), map_location="cpu"), file_sha256(path)


def _load_python(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    module_name, sep, factory_name = target.partition(":")
    if not sep or not module_name or not factory_name:
        raise TeacherError(f"--teacher {spec}: expected python:package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as e:
        raise TeacherError(f"--teacher {spec}: cannot import {factory_name} from {module_name} ({e})") from e
    try:
        module = factory(**args)
    except TypeError as e:
        raise TeacherError(f"--teacher {spec}: the factory rejected --teacher-arg values ({e})") from e
    if not isinstance(module, nn.Module):
        raise TeacherError(f"--teacher {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    return module, state_dict_sha256(module)


def _load_checkpoint(target: str, spec: str, args: dict) -> tuple[nn.Module, str | None]:
    """A tiekd student checkpoint as a teacher (architecture, normalisation from the file)."""
    # Lazy: checkpoints rebuild students with timm (3 s to import), which other teachers never need.
    from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint

    path = _existing_file(target, spec)
    state = load_checkpoint(path)
    student = student_from_checkpoint(state, path=path)
    return PredictDepth(student, input_scale=float(state.get("input_scale", 1.0))), file_sha256(path)


class PredictDepth(nn.Module):
    """Exposes a tiekd student's ``predict_depth`` (metres, any head) as ``forward``;
    ``input_scale`` is the scale of the crop it was trained at (its checkpoint's)."""

    def __init__(self, student: nn.Module, *, input_scale: float = 1.0):
        super().__init__()
        self.student = student
        self.input_scale = input_scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.student.predict_depth(image)


_LOADERS: dict[str, Callable[[str, str, dict], tuple[nn.Module, str | None]]] = {
    "export": _load_export,
    "torchscript": _load_torchscript,
    "python": _load_python,
    "hf": load_hf,
    "checkpoint": _load_checkpoint,
    "onnx": load_onnx,
}


def load_teacher(spec: str, *, args: dict | None = None, device: torch.device | str = "cpu") -> Teacher:
    """Load the teacher ``spec`` names, in eval mode, without gradients, on ``device``."""
    kind, sep, target = spec.partition(":")
    if not sep or kind not in _LOADERS or not target:
        raise TeacherError(f"--teacher {spec!r} is not KIND:TARGET with KIND one of {', '.join(TEACHER_KINDS)}")
    try:
        module, sha = _LOADERS[kind](target, spec, dict(args or {}))
    except TeacherError:
        raise
    except Exception as e:  # a foreign file format can fail in any way; report it as one line
        raise TeacherError(f"--teacher {spec}: cannot load it ({type(e).__name__}: {e})") from e
    module = module.to(device)
    if kind != "export":  # an exported program is frozen in the mode it was exported in
        module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return Teacher(
        spec=spec,
        module=module,
        weights_sha256=sha,
        default_name=default_name(spec),
        dtype=weights_dtype(module),
        input_scale=getattr(module, "input_scale", None),
        fixed_input=getattr(module, "fixed_input", None),
    )


def weights_dtype(module: nn.Module) -> str | None:
    """The dtype of a module's first floating-point parameter or buffer, e.g. "float32"."""
    tensors = [*module.parameters(), *module.buffers()]
    floating = [t.dtype for t in tensors if t.is_floating_point()]
    return str(floating[0]).removeprefix("torch.") if floating else None


def _hw(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape[-2:]))


def _forward(module: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, input_size: tuple[int, int] | None) -> torch.Tensor:
    """One teacher call with optional resizing in and out; returns (B, 1, H, W) float32."""
    size = tuple(image.shape[-2:])
    x = image if input_size is None else F.interpolate(image, size=input_size, mode="bilinear", align_corners=False)
    depth = module(x)
    depth = getattr(depth, "predicted_depth", depth)
    if not isinstance(depth, torch.Tensor):
        raise TeacherError(f"the teacher returned {type(depth).__name__}, expected a depth tensor")
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[:2] != (image.shape[0], 1):
        raise TeacherError(
            f"the teacher returned shape {tuple(depth.shape)} for input {tuple(x.shape)}; "
            "expected (B, 1, H, W) or (B, H, W) depth in metres"
        )
    if tuple(depth.shape[-2:]) != tuple(x.shape[-2:]):
        raise TeacherError(
            f"the teacher returned {_hw(depth)} depth for a {_hw(x)} input; a teacher must return depth at "
            "its input size (to run it at another size, resize explicitly with --teacher-input HxW)"
        )
    if input_size is not None:
        depth = F.interpolate(depth.float(), size=size, mode="bilinear", align_corners=False)
    return depth.float()


@torch.no_grad()
def predict_depth(
    module: nn.Module,
    image: torch.Tensor,
    *,
    flip_tta: bool = True,
    input_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Teacher depth (B, 1, H, W) metres for image (B, 3, H, W) in [0, 1].

    With ``flip_tta`` the prediction is the mean of the prediction and the flipped-back
    prediction of the mirrored image, both in one batch of 2B; a module with ``model_flip_tta``
    (an hf: model whose post-processing averages flipped outputs) does its own.
    """
    if not flip_tta:
        return _forward(module, image, input_size)
    if getattr(module, "model_flip_tta", False):  # the model averages its own flipped outputs (ZoeDepth)
        return _forward(functools.partial(module, flip_tta=True), image, input_size)
    both = _forward(module, torch.cat([image, image.flip(-1)]), input_size)
    batch = image.shape[0]
    return (both[:batch] + both[batch:].flip(-1)) / 2
