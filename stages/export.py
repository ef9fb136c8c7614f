"""``tiekd export``: a trained student as a file to deploy or share, checked against its checkpoint.

Formats: ``export`` (a ``torch.export`` program, ``torch.export.save``), ``onnx`` (opset
:data:`~tiekd.pipeline.deploy.export.ONNX_OPSET`; ``--int8``: quantized, :mod:`tiekd.stages.export_int8`),
``executorch`` (a ``.pte`` for phones, XNNPACK, batch 1; the optional ``executorch`` package) and
``checkpoint`` (weights and architecture only, without optimizer state: the small file to share;
every tiekd command that takes a checkpoint reads it). The first two take RGB float32 in [0, 1] (B, 3, H, W) and give depth in metres (B, 1, H, W),
so they are valid ``--teacher export:FILE`` / ``--teacher onnx:FILE`` teachers.

The file is written beside ``--out`` under a temporary name, checked, and only then renamed: a
failed check leaves an existing ``--out`` as it was.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from tiekd.pipeline.deploy import export as exporting
from tiekd.pipeline.deploy import mobile
from tiekd.pipeline.deploy.quantize import quantize_int8
from tiekd.pipeline.errors import ConfigError, ExportError, OutputError
from tiekd.pipeline.files import os_error_in, os_reason, require_writable_folder, write_fault
from tiekd.stages import export_int8

FORMATS = ("onnx", "export", "executorch", "checkpoint")
WEIGHTS_KEYS = ("architecture", "model", "normalisation", "input_scale", "config", "step")
"""What a ``checkpoint`` export keeps of a training checkpoint (no optimizer, scheduler, scaler)."""


@dataclass
class ExportConfig:
    """Options of ``tiekd export``, one field per flag."""

    checkpoint: Path
    """Student checkpoint (to export)."""
    out: Path
    """File to write."""
    format: str = "onnx"
    """ONNX model, torch.export program, ExecuTorch program (.pte, XNNPACK; pip install 'tiekd[mobile]'), or
    weights-only checkpoint (a small file to share)."""
    input_size: tuple[int, int] | None = None
    """Input (H, W) of the exported network. None = the dataset's cache crop at the checkpoint's training scale."""
    dynamic: bool = False
    """Any batch size (needed for flip TTA as a teacher)."""
    with_entropy: bool = False
    """Second output: the DPM entropy in nats (DPM students)."""
    int8: bool = False
    """Static INT8 quantization (onnxruntime QDQ, per-channel int8 weights) calibrated on --split frames; the
    accuracy change is printed and written beside --out."""
    split: Path | None = None
    """Split file whose frames calibrate --int8 and measure its accuracy change."""
    data_root: Path | None = None
    """Root of the split's images (--int8)."""
    gt_root: Path | None = None
    """Root of the split's ground-truth depth (--int8): also score the float and INT8 models against it."""
    calibration_frames: int = 16
    """Frames of --split that calibrate --int8, spread over it; up to as many others measure the change."""


@dataclass
class ExportResult:
    path: Path
    bytes: int
    description: str
    checks: list[str] = field(default_factory=list)


def default_input_size(state: dict) -> tuple[int, int]:
    """The training dataset's cache crop (KITTI: the 352x1216 KB crop) at the scale the student was
    trained at."""
    scale = float(state.get("input_scale", 1.0))
    height, width = get_dataset((state.get("config") or {}).get("dataset", DEFAULT_DATASET)).cache_crop
    return round(height * scale), round(width * scale)


def _write_checked(out: Path, write, check) -> list[str]:
    """``write(tmp)``, ``check(tmp) -> lines`` (raises when wrong), then rename tmp to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the suffix: torch.export warns about files not ending in .pt2.
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=f".tmp{out.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        lines = check(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a file to share: the usual permissions, not mkstemp's 0600
        os.replace(tmp, out)
        return lines
    except Exception as e:
        if write_fault(e) is None:
            raise
        kept = f"the existing {out.name} is intact" if out.is_file() else f"no {out.name} was written"
        reason = os_reason(os_error_in(e))
        raise OutputError(f"cannot write --out {out} ({reason}); {kept}; free space, then export again") from e
    finally:
        tmp.unlink(missing_ok=True)


def _check_outputs(kind: str, got: list, want: list, shape, n_bins: int) -> str:
    """One line comparing an exported file's outputs with the checkpoint's; ExportError beyond tolerance.

    Depth: max relative difference; entropy (when exported): max difference over log K nats."""
    differences = [exporting.relative_difference(got[0], want[0])]
    what = "depth"
    if len(want) > 1 and len(got) > 1:
        differences.append(exporting.entropy_difference(got[1], want[1], n_bins))
        what = "depth and entropy"
    where = f"on a random {'x'.join(map(str, shape))} image"
    line = (
        f"check: {kind} {what} vs the checkpoint's {where}: max relative difference "
        f"{' and '.join(f'{d:.1e}' for d in differences)} (limit {exporting.VERIFY_TOLERANCE:g})"
    )
    if not max(differences) <= exporting.VERIFY_TOLERANCE or len(got) != len(want):
        raise ExportError(f"{line}: FAILED; the export is not written, report this with the checkpoint")
    return line + ": OK"


NETWORK_FORMATS = {
    "onnx": (exporting.export_onnx, exporting.run_onnx, "onnxruntime", f"ONNX model (opset {exporting.ONNX_OPSET})"),
    "export": (exporting.export_program, exporting.run_program, "torch.export", "torch.export program"),
    "executorch": (mobile.export_executorch, mobile.run_executorch, "ExecuTorch", "ExecuTorch program (XNNPACK)"),
}
"""format -> (writer, runner of the written file, runner's name, description)."""


def _export_network(cfg: ExportConfig, state: dict, size: tuple[int, int]) -> tuple[list[str], str]:
    student = student_from_checkpoint(state, path=cfg.checkpoint)
    model = exporting.DeployedStudent(student, with_entropy=cfg.with_entropy, input_size=size)
    image = exporting.example_image(size, exporting.DYNAMIC_BATCH_EXAMPLE if cfg.dynamic else 1)
    want = exporting.checkpoint_outputs(student, image, with_entropy=cfg.with_entropy)
    writer, runner, runner_name, kind = NETWORK_FORMATS[cfg.format]
    n_bins = student.arch.get("n_bins", 1)

    def write(tmp: Path) -> None:
        writer(model, tmp, size, dynamic_batch=cfg.dynamic)

    def check(tmp: Path) -> list[str]:
        return [_check_outputs(runner_name, runner(tmp, image), want, image.shape, n_bins)]

    lines = _write_checked(cfg.out, write, check)
    return lines, f"{kind}: {_signature(cfg, size)}"


def _signature(cfg: ExportConfig, size: tuple[int, int]) -> str:
    batch = "B" if cfg.dynamic else "1"
    outputs = f"depth {batch}x1x{size[0]}x{size[1]} in metres" + (" and entropy (nats)" if cfg.with_entropy else "")
    return f"input {batch}x3x{size[0]}x{size[1]} float32 RGB in [0, 1], output {outputs}"


def report_path(out: Path) -> Path:
    """Where ``--int8`` writes its measured accuracy change: beside the model, ``NAME.accuracy.json``."""
    return out.with_name(out.stem + ".accuracy.json")


def _export_int8(cfg: ExportConfig, state: dict, size: tuple[int, int]) -> tuple[list[str], str]:
    """A float ONNX model (checked against the checkpoint), quantized, then measured on real frames."""
    dataset = get_dataset((state.get("config") or {}).get("dataset", DEFAULT_DATASET))
    frames = export_int8.read_frames(cfg, dataset, size)  # bad options and data fail before the work
    student = student_from_checkpoint(state, path=cfg.checkpoint)
    model = exporting.DeployedStudent(student, with_entropy=cfg.with_entropy, input_size=size)
    image = exporting.example_image(size, exporting.DYNAMIC_BATCH_EXAMPLE if cfg.dynamic else 1)
    want = exporting.checkpoint_outputs(student, image, with_entropy=cfg.with_entropy)
    measured = {}
    with tempfile.TemporaryDirectory() as folder:
        float_path = Path(folder) / "float.onnx"
        exporting.export_onnx(model, float_path, size, dynamic_batch=cfg.dynamic)
        got = exporting.run_onnx(float_path, image)
        lines = [_check_outputs("onnxruntime (float model)", got, want, image.shape, student.arch.get("n_bins", 1))]

        def check(tmp: Path) -> list[str]:
            runners = [exporting.onnx_runner(path) for path in (float_path, tmp)]
            measured["change"] = export_int8.measure(*runners, frames, dataset)
            return export_int8.report_lines(measured["change"], frames, cfg.split, dataset)

        lines += _write_checked(cfg.out, lambda tmp: quantize_int8(float_path, tmp, frames.calibration), check)
        sizes = {"float_bytes": float_path.stat().st_size, "int8_bytes": cfg.out.stat().st_size}
    export_int8.write_report(report_path(cfg.out), measured["change"], frames, {"model": str(cfg.out), **sizes})
    lines.append(f"int8: {sizes['int8_bytes'] / 1e6:.1f} MB against {sizes['float_bytes'] / 1e6:.1f} MB float; "
                 f"the measured change is in {report_path(cfg.out)}")  # fmt: skip
    return lines, f"ONNX model, INT8 (QDQ, per-channel int8 weights, uint8 activations): {_signature(cfg, size)}"


def _export_weights(cfg: ExportConfig, state: dict) -> tuple[list[str], str]:
    weights = {key: state[key] for key in WEIGHTS_KEYS if key in state}
    expected = student_from_checkpoint(state, path=cfg.checkpoint).state_dict()

    def check(tmp: Path) -> list[str]:
        loaded = student_from_checkpoint(load_checkpoint(tmp), path=tmp).state_dict()
        if any(not torch.equal(loaded[k], expected[k]) for k in expected):
            raise ExportError(f"{cfg.out}: the weights read back differ from {cfg.checkpoint}; nothing written")
        return [f"check: the {len(expected)} weight tensors read back equal the checkpoint's: OK"]

    lines = _write_checked(cfg.out, lambda tmp: save_checkpoint(tmp, weights, then="then export again"), check)
    return lines, "tiekd checkpoint, weights only (no optimizer state)"


def run(cfg: ExportConfig) -> ExportResult:
    """Export the student of ``cfg.checkpoint`` to ``cfg.out`` and check it."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"--format {cfg.format}: use one of {', '.join(FORMATS)}")
    if cfg.format == "checkpoint" and (cfg.dynamic or cfg.with_entropy or cfg.input_size):
        raise ConfigError(
            "--format checkpoint keeps the weights only; --input, --dynamic and --with-entropy do not apply"
        )
    if cfg.format == "executorch" and cfg.dynamic:
        raise ConfigError("--format executorch exports a batch of 1; leave out --dynamic")
    if cfg.int8 and cfg.format != "onnx":
        raise ConfigError(f"--int8 writes an ONNX model; it does not apply to --format {cfg.format}")
    state = load_checkpoint(cfg.checkpoint)
    require_writable_folder(cfg.out.parent, flag="--out's folder")
    if cfg.format == "checkpoint":
        checks, description = _export_weights(cfg, state)
    elif cfg.int8:
        checks, description = _export_int8(cfg, state, cfg.input_size or default_input_size(state))
    else:
        checks, description = _export_network(cfg, state, cfg.input_size or default_input_size(state))
    return ExportResult(path=cfg.out, bytes=cfg.out.stat().st_size, description=description, checks=checks)


def report(result: ExportResult) -> str:
    """What was written, its size and the check that was run."""
    size = result.bytes / 1e6
    return "\n".join([f"wrote {result.path} ({size:.1f} MB): {result.description}", *result.checks])
