"""Static INT8 post-training quantization of an exported ONNX student, and what it costs in accuracy.

onnxruntime's ``quantize_static`` in the QDQ format: weights int8 per output channel, activations
uint8 per tensor with ranges calibrated (min/max) on real frames. What stays float: the DPM readout
(every MatMul fed by a softmax: the probabilities times the bin centres, and attention's
probabilities times values), since a probability in 1/255 steps moves an expected depth by metres.
The change is measured, never assumed: :func:`int8_change` scores the INT8 model against the float
model (and both against GT) with the evaluation protocol's metrics.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from tiekd.pipeline.metrics import depth_metrics, mean_metrics

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
"""Operators given int8 weights (the network's arithmetic); the rest run in float between them."""

SOFTMAX_OPS = ("Softmax", "LogSoftmax", "Exp")
"""Outputs that are probabilities (``Exp`` of a log-softmax is the DPM): MatMuls they feed stay float."""

CHANGE_METRICS = ("abs_rel", "rmse", "d1")
"""The metrics reported for the INT8 change (AbsRel, RMSE in metres, d1)."""


class _Frames:
    """onnxruntime's calibration reader over a list of (1, 3, H, W) float32 images."""

    def __init__(self, input_name: str, frames: list[np.ndarray]):
        self._feeds = iter([{input_name: frame} for frame in frames])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # onnxruntime calls it before a second pass; one pass is all min/max needs
        pass


def readout_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes fed by a softmax, a log-softmax or an exp (kept float)."""
    probabilities = {out for node in model.graph.node if node.op_type in SOFTMAX_OPS for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and probabilities & set(n.input)]


def quantize_int8(float_path: Path, out_path: Path, frames: list[np.ndarray]) -> None:
    """Write the INT8 (QDQ, per-channel) version of the ONNX model ``float_path`` to ``out_path``,
    calibrated on ``frames`` (each (1, 3, H, W) float32 RGB in [0, 1], the model's input)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            _Frames(model.graph.input[0].name, frames),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=readout_nodes(model),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def int8_change(
    float_depths: list[np.ndarray],
    int8_depths: list[np.ndarray],
    gts: list[np.ndarray | None],
    *,
    mask: np.ndarray,
    min_depth: float,
    max_depth: float,
) -> dict[str, dict[str, float]]:
    """Mean metrics over frames (each an (H, W) map in metres): ``int8 vs float`` (the float model's
    depth as the reference) and, for the frames with GT, ``float vs GT`` and ``int8 vs GT``.

    ``mask`` is the protocol's evaluation crop on these maps; depth outside [min_depth, max_depth]
    is no reference (as GT outside the range is none).
    """
    kwargs = dict(mask=mask, min_depth=min_depth, max_depth=max_depth)
    result = {"int8 vs float": _mean(list(zip(int8_depths, float_depths)), **kwargs)}
    with_gt = [(f, i, g) for f, i, g in zip(float_depths, int8_depths, gts) if g is not None]
    if with_gt:
        result["float vs GT"] = _mean([(f, g) for f, _, g in with_gt], **kwargs)
        result["int8 vs GT"] = _mean([(i, g) for _, i, g in with_gt], **kwargs)
    return result


def _mean(pairs, *, mask, min_depth, max_depth) -> dict[str, float]:
    scores = [depth_metrics(p, r, min_depth=min_depth, max_depth=max_depth, crop=mask) for p, r in pairs]
    scores = [s for s in scores if s is not None]
    if not scores:
        return {name: float("nan") for name in CHANGE_METRICS}
    means = mean_metrics(scores)
    return {name: means[name] for name in CHANGE_METRICS}
