"""``tiekd export``: a trained student as a file to deploy, added to the ``tiekd`` group by cli.py.

The command imports its stage module when it runs, as in :mod:`tiekd.cli`.
"""

from __future__ import annotations

from pathlib import Path

import click

from tiekd import cli_options as shared
from tiekd.cli_options import PATH, TiekdCommand, size


@click.command("export", cls=TiekdCommand)
@shared.checkpoint(required=True, what="to export")
@click.option("--format", default="onnx", show_default=True,
              type=click.Choice(["onnx", "export", "executorch", "checkpoint"]),
              help="ONNX model, torch.export program, ExecuTorch program (.pte, XNNPACK; pip install 'tiekd[mobile]'), "
                   "or weights-only checkpoint (a small file to share).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--input", "input_size", metavar="HxW",
              help="Input (H, W) of the exported network [default: the cache crop at the training scale].")  # fmt: skip
@click.option("--dynamic", is_flag=True, help="Any batch size (needed for flip TTA as a teacher).")
@click.option("--with-entropy", is_flag=True, help="Second output: the DPM entropy in nats (DPM students).")
@click.option("--int8", is_flag=True,
              help="Static INT8 quantization (onnxruntime QDQ, per-channel int8 weights) calibrated on --split frames; "
                   "the accuracy change is printed and written beside --out.")  # fmt: skip
@click.option("--split", type=PATH, help="Split file whose frames calibrate --int8 and measure its accuracy change.")
@click.option("--data-root", type=PATH, help="Root of the split's images (--int8).")
@click.option("--gt-root", type=PATH,
              help="Root of the split's ground-truth depth (--int8): also score the float and INT8 models against it.")  # fmt: skip
@click.option("--calibration-frames", default=16, show_default=True, type=click.IntRange(min=1),
              help="Frames of --split that calibrate --int8, spread over it; up to as many others measure the change.")  # fmt: skip
def export(input_size, **options) -> None:
    """Export a student (RGB [0, 1] in, depth in metres out) and check it against the checkpoint."""
    from tiekd.stages import export as stage  # lazy: see tiekd.cli

    cfg = stage.ExportConfig(input_size=size(input_size, "--input"), **options)
    click.echo(stage.report(stage.run(cfg)))
