"""The ``tiekd`` command line: parse options, build a stage's config, call its ``run``.

Known errors (:class:`tiekd.pipeline.errors.TiekdError`) become one line on stderr and exit
status 1; ``tiekd --verbose ...`` also prints the traceback. Options that several commands share
are written once in :mod:`tiekd.cli_options`.

Each command imports its own stage module when it runs: importing every stage costs about 6 s
more than this module (timm, zarr, dask, matplotlib), which ``tiekd --help`` and every other
command would pay.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import click

import tiekd
from tiekd import cli_options as shared
from tiekd.cli_cache import cache
from tiekd.cli_options import FOLDER, PATH, TiekdCommand, size
from tiekd.data.augment import COLOUR_AUGS
from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import TiekdError, out_of_memory
from tiekd.pipeline.methods import METHODS
from tiekd.pipeline.teachers.load import parse_teacher_args
from tiekd.stages.recipes import config_path, format_recipes, list_recipes
from tiekd.stages.runtime import set_threads
from tiekd.stages.training.config import TrainStudentConfig


class TiekdGroup(click.Group):
    """A group that turns allocation failures into one line too, and shows the traceback behind an
    error when ``--verbose`` was given."""

    command_class = TiekdCommand
    group_class = type

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TiekdError:
            if ctx.meta.get("tiekd.verbose"):
                traceback.print_exc()
            raise
        except (MemoryError, RuntimeError) as e:
            error = out_of_memory(e)
            if error is None:
                raise
            if ctx.meta.get("tiekd.verbose"):
                traceback.print_exc()
            raise error from e


@click.group(cls=TiekdGroup)
@click.version_option(tiekd.__version__, prog_name="tiekd")
@click.option("--verbose", is_flag=True, help="Show the traceback behind an error.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Torch CPU threads [default: OMP_NUM_THREADS, else all cores but one; the demo: 1].",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool, threads: int | None) -> None:
    """TIE-KD for monocular depth: cache a teacher once, distil many students from the cache."""
    ctx.meta["tiekd.verbose"] = verbose
    ctx.meta["tiekd.threads"] = threads
    set_threads(threads)


@main.command("sample-data")
@click.argument("out", type=FOLDER)
@click.option("--train", "n_train", default=32, show_default=True, help="Training frames.")
@click.option("--test", "n_test", default=8, show_default=True, help="Test frames.")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives identical files.")
@shared.dataset
def sample_data(out: Path, n_train: int, n_test: int, seed: int, dataset: str) -> None:
    """Write a small procedural dataset in the dataset's layout to OUT (KITTI: streets; NYU: rooms)."""
    paths = get_dataset(dataset).write_sample(out, n_train=n_train, n_test=n_test, seed=seed)
    click.echo(f"wrote {n_train} train and {n_test} test frames to {out}")
    click.echo(f"  train: --data-root {paths.data_root} --gt-root {paths.gt_root} --split {paths.train_split}")
    click.echo(f"  test:  --data-root {paths.eval_data_root} --gt-root {paths.eval_gt_root} --split {paths.test_split}")
    click.echo(f"  (dense GT: {paths.dense_gt_root})")


@main.command("cache-teacher")
@click.option(
    "--teacher",
    required=True,
    help="Teacher spec KIND:TARGET, KIND one of export, torchscript, python, hf, checkpoint, onnx.",
)
@shared.data_root
@shared.split
@click.option("--out", required=True, help="Store path or fsspec URL.")
@shared.gt_root(required=False, what="when given, every record's GT must exist (checked before the run)")
@click.option("--name", help="Teacher group name in the store [default: derived from the spec].")
@click.option("--split-name", help="Split group name in the store [default: the split file's stem].")
@click.option(
    "--teacher-arg", "teacher_args", multiple=True, metavar="K=V",
    help="Keyword argument for python: factories and hf: from_pretrained (repeatable).",
)  # fmt: skip
@click.option("--teacher-input", metavar="HxW", help="Resize the crop to HxW for the teacher, and the map back.")
@shared.flip_tta
@click.option(
    "--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Images per teacher batch."
)
@shared.device
@click.option("--amp", is_flag=True, help="float16 autocast on CUDA (ignored on the CPU).")
@shared.workers
@click.option(
    "--shard", default="0/1", show_default=True, metavar="I/N",
    help="Fill store shards I, I+N, I+2N, ... of the split (N processes).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing teacher/split group made differently.")
@click.option(
    "--cluster",
    metavar="local:N|tcp://HOST:PORT",
    help="Run on dask: N local worker processes (one per GPU), or join a running scheduler.",
)
@click.option(
    "--max-clipped-share",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Stop when more than this share of a frame's pixels lies outside the dataset's depth range.",
)
@click.option(
    "--frames-per-shard",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Frames per shard file of a new store group (a resumed group keeps its own).",
)
@click.option(
    "--store-format",
    default=4,
    show_default=True,
    type=click.IntRange(2, 4),
    help="Store format of a new group (a resumed group keeps its own): 4 = 2-D predictor with byte planes "
    "(smallest, fastest reads); 3 and 2 (2-D predictor, row delta) for readers with a tiekd older than format 4.",
)
@shared.dataset
def cache_teacher(teacher_args, teacher_input, shard, **options) -> None:
    """Run a teacher once over a split and store its depth maps (stage one)."""
    from tiekd.stages import cache_teacher as stage  # lazy: see the module docstring

    cfg = stage.CacheTeacherConfig(
        teacher_args=parse_teacher_args(teacher_args),
        teacher_input=size(teacher_input, "--teacher-input"),
        shard=shared.shard(shard),
        **options,
    )
    click.echo(stage.report(stage.run(cfg)))


main.add_command(cache)


@main.command("train-student")
@shared.store
@shared.data_root
@shared.gt_root(required=False, what="supervised training and validation")
@click.option("--split", required=True, type=PATH, help="Training split file.")
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
@click.option("--amp", is_flag=True, help="float16 autocast with loss scaling on CUDA (ignored on the CPU).")
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


def train_student_config(crop, resume, **options) -> TrainStudentConfig:
    """The ``train-student`` options as its stage's config."""
    resume = {"no": False, "yes": True}.get(resume, resume)
    return TrainStudentConfig(crop=size(crop, "--crop"), resume=resume, **options)


@main.command("recipes")
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the shipped recipes (one per row of the authors' KITTI and NYU tables), or print recipe NAME."""
    click.echo(config_path(name).read_text() if name else format_recipes(list_recipes()), nl=not name)


@main.command("evaluate")
@shared.checkpoint(required=False, what="exclusive with --cache")
@shared.store
@shared.data_root
@shared.gt_root(required=True, what="the depth scored")
@shared.split
@click.option("--crop", type=click.Choice(["garg", "eigen", "none"]),
              help="Evaluation crop [default: the dataset's, KITTI garg].")  # fmt: skip
@click.option(
    "--garg-on",
    default="kb",
    show_default=True,
    type=click.Choice(["kb", "full"]),
    help="Compute the crop on the cache crop (KITTI: 352x1216 KB crop; authors, AdaBins) or on the full image (BTS).",
)
@shared.flip_tta
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics as JSON.")
@click.option(
    "--save-images",
    type=FOLDER,
    help="Write one labelled figure per image: input, depth, GT, error, DPM entropy (colour bars in metres).",
)
@shared.device
@shared.workers
@shared.dataset
def evaluate(**options) -> None:
    """Evaluate a student or a cached teacher under the dataset's protocol."""
    from tiekd.stages import evaluate as stage  # lazy: see the module docstring

    click.echo(stage.format_result(stage.run(stage.EvaluateConfig(**options))))


@main.command("export")
@shared.checkpoint(required=True, what="to export")
@click.option("--format", default="onnx", show_default=True, type=click.Choice(["onnx", "export", "checkpoint"]),
              help="ONNX model, torch.export program, or weights-only checkpoint (a small file to share).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--input", "input_size", metavar="HxW",
              help="Input (H, W) of the exported network [default: the cache crop at the training scale].")  # fmt: skip
@click.option("--dynamic", is_flag=True, help="Any batch size (needed for flip TTA as a teacher).")
@click.option("--with-entropy", is_flag=True, help="Second output: the DPM entropy in nats (DPM students).")
def export(input_size, **options) -> None:
    """Export a student (RGB [0, 1] in, depth in metres out) and check it against the checkpoint."""
    from tiekd.stages import export as stage  # lazy: see the module docstring

    cfg = stage.ExportConfig(input_size=size(input_size, "--input"), **options)
    click.echo(stage.report(stage.run(cfg)))


@main.command("explain")
@shared.checkpoint(required=True, what="a DPM student")
@shared.store
@shared.data_root
@shared.gt_root(required=True, what="the GT drawn and scored")
@shared.split
@click.option("--out", required=True, type=FOLDER, help="Folder for the figures and index.html.")
@click.option("--images", default=4, show_default=True, type=click.IntRange(min=1),
              help="Explain the first N records with GT (unless --ids).")  # fmt: skip
@click.option("--ids", multiple=True, help="RGB path of a record, as in the split (repeatable).")
@click.option("--pixel", "pixels", multiple=True, metavar="ROW,COL",
              help="(row, col) on the cache crop (repeatable); replaces the automatic choice.")  # fmt: skip
@click.option(
    "--crop",
    help="Evaluation crop holding the automatic pixels and the sparsification curves [default: the dataset's].",
)
@click.option("--evaluation", type=PATH, help="An `evaluate --json` file: also draw its set's curves.")
@shared.dataset
@shared.device
def explain(ids, pixels, **options) -> None:
    """Figures of what a DPM student believes, per image and per pixel, with an offline index.html."""
    from tiekd.stages import explain as stage  # lazy: see the module docstring

    cfg = stage.ExplainConfig(ids=tuple(ids), pixels=tuple(stage.parse_pixel(p) for p in pixels), **options)
    click.echo(stage.report(stage.run(cfg)))


@main.command("demo")
@click.option(
    "--out", default="tiekd-demo", show_default=True, type=FOLDER, help="Folder of the demo's data, runs and results."
)
@click.option("--quick", is_flag=True, help="About a minute: fewer frames, lower resolution, a few steps.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps of each student [default: 120, quick 3].")
@shared.device
@shared.dataset
@click.pass_context
def demo(ctx: click.Context, **options) -> None:
    """The whole pipeline on the embedded sample: teacher, cache, students, evaluation, table, pictures."""
    from tiekd.stages import demo as stage  # lazy: see the module docstring

    threads = ctx.meta.get("tiekd.threads")
    path = stage.run(stage.DemoConfig(**options, **({"threads": threads} if threads else {})))
    click.echo(f"results: {path} (picture: {path.parent / 'comparison.png'})")


if __name__ == "__main__":
    main()
