"""``tiekd train-student``: stage two's options, added to the ``tiekd`` group by cli.py.

The command imports its stage module when it runs, as in :mod:`tiekd.cli`.
"""

from __future__ import annotations

import click

from tiekd import cli_options as shared
from tiekd.cli_options import FOLDER, PATH, TiekdCommand, size
from tiekd.data.augment import COLOUR_AUGS
from tiekd.pipeline.methods import METHODS
from tiekd.stages.runtime import AUTOCAST_DTYPES
from tiekd.stages.training.config import TrainStudentConfig


class AutocastChoice(click.Choice):
    """``--amp``'s values; a config file's ``amp: true`` or ``false`` (the flag before bf16) reads as fp16 or none."""

    def __init__(self):
        super().__init__(list(AUTOCAST_DTYPES))

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            return "fp16" if value else None
        return super().convert(value, param, ctx)


@click.command("train-student", cls=TiekdCommand)
@shared.store
@shared.data_root(required=False)
@shared.inputs
@shared.gt_root(required=False, what="supervised training and validation")
@click.option("--split", type=PATH, help="Training split file [default: the frames the --cache group was made from, "
              "for a group of cache-teacher --images].")  # fmt: skip
@click.option("--unlabelled", multiple=True, metavar="GROUP=SHARE",
              help="Also train on a group of image sources of --cache (the run's teacher), GROUP=SHARE of every global "
              "batch (repeatable); the split takes the rest.")  # fmt: skip
@click.option("--teacher-mix", multiple=True, metavar="TEACHER=WEIGHT",
              help="Distil from several teacher groups of the same frames, TEACHER=WEIGHT each (repeatable, instead "
              "of --teacher): the target DPM is their weighted mixture.")  # fmt: skip
@shared.leakage
@click.option("--init-from", type=PATH, help="Start from the weights of a tiekd student checkpoint and fine-tune them "
              "(a fresh optimiser and schedule).")  # fmt: skip
@click.option("--student", default="mobilenetv2", show_default=True,
              help="Preset (mobilenetv2, resnet18, resnet50) or any timm encoder name.")  # fmt: skip
@click.option("--method", default="tiekd", show_default=True, type=click.Choice(METHODS),
              help="Distillation method (tiekd, the response-KD baselines) or supervised training.")  # fmt: skip
@click.option(
    "--decoder",
    default="standard",
    show_default=True,
    type=click.Choice(["standard", "light"]),
    help="Student decoder: the authors' (standard) or light (fewer channels at full resolution).",
)
@click.option("--out", required=True, type=FOLDER, help="Run directory.")
@click.option("--epochs", default=24, show_default=True, type=click.IntRange(min=1), help="Passes over the split.")
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
    help="Samples per process and micro-batch (the paper: 8 per GPU).",
)  # fmt: skip
@click.option(
    "--accumulate", default=1, show_default=True, type=click.IntRange(min=1),
    help="Micro-batches accumulated into one step: global batch = processes x batch size x this.",
)  # fmt: skip
@click.option(
    "--sync-bn", is_flag=True, help="BatchNorm with the statistics of all processes' batches (torchrun runs)."
)
@click.option(
    "--crop",
    metavar="HxW",
    help="Random training crop taken from the dataset's train region [default: the dataset's, KITTI 352x704].",
)
@click.option(
    "--colour-aug",
    default="bts",
    show_default=True,
    type=click.Choice(COLOUR_AUGS),
    help="Colour augmentation: bts (gamma on [0, 1], BTS) or released "
    "(gamma on 0..255 as the authors' code, which brightens and saturates).",
)
@click.option(
    "--scale",
    default=1.0,
    show_default=True,
    help="Resize crop and maps by this factor (quick experiments at low resolution).",
)
@click.option("--lr", default=1e-3, show_default=True, help="Maximum learning rate of the one-cycle schedule.")
@click.option(
    "--alpha", default=0.1, show_default=True, help="Weight of the DPM term against the depth term in TIE-KD."
)
@click.option("--sigma", type=float, help="Std (m) of the teacher DPM [default: paper form the dataset's; code form "
              "0.5, L_DPM only the dataset's, as released].")  # fmt: skip
@click.option(
    "--dpm-form",
    default="paper",
    show_default=True,
    type=click.Choice(["paper", "code"]),
    help="Teacher DPM and SSIM: paper (Gaussian mass per bin, float64 SSIM) or code (the released code's softmax of "
    "densities, abs() float32 SSIM, also in the response-KD losses).",
)
@click.option("--loss-scale", type=float, help="Factor on the whole loss [default: TIE-KD 10, but 1 for the code form's "
              "alpha 0 and 1 as released; 1 for the other methods].")  # fmt: skip
@click.option(
    "--rotate-teacher/--no-rotate-teacher",
    default=None,
    help="Rotate the teacher map with the image (the released runs never do) "
    "[default: yes, but no with --dpm-form code].",
)
@click.option("--n-bins", type=click.IntRange(min=2), help="DPM bins [default: the dataset's, KITTI 257].")
@click.option(
    "--min-depth", type=float, help="Smallest depth (m) of bins and regression head [default: the dataset's]."
)
@click.option(
    "--max-depth", type=float, help="Largest depth (m) of bins and regression head [default: the dataset's, KITTI 80]."
)
@click.option(
    "--loss-top-row",
    type=int,
    help="First row of the (unscaled) crop the TIE-KD loss sees "
    "[default: the dataset's, KITTI 110: the sky above has no LiDAR].",
)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps (the schedule spans them).")
@click.option("--val-split", type=PATH, help="Split evaluated after every epoch; best.pt keeps the lowest RMSE.")
@click.option("--val-data-root", type=PATH, help="Images of --val-split where they are not under --data-root.")
@click.option("--val-gt-root", type=PATH, help="GT of --val-split where it is not under --gt-root.")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="Start from timm's ImageNet weights, as the paper's students do.")  # fmt: skip
@click.option(
    "--weights",
    metavar="TAG",
    help="timm pretrained tag of the encoder's start weights [default: the preset's, e.g. resnet18.tv_in1k].",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="yes",
    default="no",
    type=click.Choice(["no", "yes", "auto"]),
    metavar="[auto]",
    help="Continue the run in --out from last.pt; "
    "auto: continue it if it has a last.pt, else start it (torchrun restarts).",
)
@shared.device
@click.option(
    "--amp",
    is_flag=False,
    flag_value="fp16",
    default=None,
    type=AutocastChoice(),
    metavar="[fp16|bf16]",
    help="Autocast: fp16 (float16 with loss scaling; CUDA only, ignored on the CPU) or bf16 (bfloat16, no loss "
    "scaling; CUDA and the CPU); --amp alone is fp16.",
)
@click.option("--channels-last", is_flag=True, help="Lay the student's weights and the input images out "
              "channels-last (NHWC), the layout cuDNN's and oneDNN's convolutions often run fastest in.")  # fmt: skip
@click.option("--compile", is_flag=True, help="Compile the student's training step with torch.compile "
              "(TorchInductor): a slow first step (minutes on a CPU, a C++ compiler needed there), faster steps after.")  # fmt: skip
@shared.workers
@click.option("--seed", default=0, show_default=True, help="Seed of the weights, the data order and the augmentation.")
@click.option("--save-every", default=500, show_default=True, type=click.IntRange(min=1),
              help="Also write last.pt every this many steps (and at every epoch end).")  # fmt: skip
@shared.dataset
@click.option("--recipe-global-batch", type=click.IntRange(min=1), help="Global batch the recipe's figures were "
              "trained with (the authors: 2 GPUs x 8 = 16); a run whose processes x batch size x accumulate differ "
              "says so at start.")  # fmt: skip
def train_student(**options) -> None:
    """Train a student from the teacher cache (stage two); under torchrun, in every process."""
    from tiekd.stages import train_student as stage  # lazy: see the module docstring

    cfg = train_student_config(**options)
    cfg.option_sources = shared.option_sources(click.get_current_context()) | cfg.option_sources
    text = stage.report(stage.run(cfg))
    if text:
        click.echo(text)


def train_student_config(crop, resume, teacher_mix=(), unlabelled=(), **options) -> TrainStudentConfig:
    """The ``train-student`` options as its stage's config."""
    resume = {"no": False, "yes": True}.get(resume, resume)
    return TrainStudentConfig(crop=size(crop, "--crop"), resume=resume, teacher_mix=tuple(teacher_mix),
                              unlabelled=tuple(unlabelled), **options)  # fmt: skip
