"""The ``tiekd`` command line: parse options, build a stage's config, call its ``run``.

Known errors (:class:`tiekd.pipeline.errors.TiekdError`) become one line on stderr and exit
status 1; ``tiekd --verbose ...`` also prints the traceback.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import click

import tiekd
from tiekd.cli_cache import cache
from tiekd.cli_options import TiekdCommand
from tiekd.pipeline.errors import TiekdError, out_of_memory
from tiekd.stages.runtime import DEVICES, default_workers, set_threads


def _size(value: str | None, flag: str) -> tuple[int, int] | None:
    """``"352x704"`` -> (352, 704)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH, e.g. 352x704", param_hint=flag)
    return int(match[1]), int(match[2])


def _shard(value: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4)."""
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise click.BadParameter(f"{value!r} is not I/N with 0 <= I < N, e.g. 0/4", param_hint="--shard")
    return int(match[1]), int(match[2])


def _dataset_option(function):
    """``--dataset kitti|nyu``: the description whose readers, crops and presets a stage uses."""
    from tiekd.data.registry import DATASETS, DEFAULT_DATASET

    return click.option(
        "--dataset",
        type=click.Choice(list(DATASETS)),
        default=DEFAULT_DATASET,
        show_default=True,
        help="Dataset layout and protocol; crops, depth range, bins and sigma follow it unless given.",
    )(function)


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
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--train", "n_train", default=32, show_default=True, help="Training frames.")
@click.option("--test", "n_test", default=8, show_default=True, help="Test frames.")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives identical files.")
@_dataset_option
def sample_data(out: Path, n_train: int, n_test: int, seed: int, dataset: str) -> None:
    """Write a small procedural dataset in the dataset's layout to OUT (KITTI: streets; NYU: rooms)."""
    from tiekd.data.registry import get_dataset

    paths = get_dataset(dataset).write_sample(out, n_train=n_train, n_test=n_test, seed=seed)
    click.echo(f"wrote {n_train} train and {n_test} test frames to {out}")
    click.echo(f"  train: --data-root {paths.data_root} --gt-root {paths.gt_root} --split {paths.train_split}")
    click.echo(f"  test:  --data-root {paths.eval_data_root} --gt-root {paths.eval_gt_root} --split {paths.test_split}")
    click.echo(f"  (dense GT: {paths.dense_gt_root})")


@main.command("cache-teacher")
@click.option("--teacher", required=True, help="KIND:TARGET, KIND: export, torchscript, python, hf, checkpoint, onnx.")
@click.option("--data-root", required=True, type=click.Path(path_type=Path), help="KITTI raw root.")
@click.option("--split", required=True, type=click.Path(path_type=Path), help="Split file (RGB GT|None FOCAL a line).")
@click.option("--out", required=True, help="Store path or fsspec URL.")
@click.option("--gt-root", type=click.Path(path_type=Path), help="Annotated depth root; checks every GT exists.")
@click.option("--name", help="Teacher group name in the store [default: from the spec].")
@click.option("--split-name", help="Split group name in the store [default: the split file's stem].")
@click.option(
    "--teacher-arg", "teacher_args", multiple=True, metavar="K=V", help="Keyword argument for the teacher (repeatable)."
)
@click.option("--teacher-input", metavar="HxW", help="Resize the crop to HxW for the teacher and back.")
@click.option(
    "--flip-tta/--no-flip-tta", default=True, show_default=True, help="Horizontal-flip test-time augmentation."
)
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="float16 autocast on CUDA.")
@click.option(
    "--workers", default=default_workers(), show_default=True, type=click.IntRange(min=0), help="DataLoader workers."
)
@click.option(
    "--shard", default="0/1", show_default=True, metavar="I/N", help="Fill store shards I, I+N, ... (N processes)."
)
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
    help="Stop when more than this share of a frame lies outside the depth range (KITTI [1e-3, 80] m).",
)
@click.option(
    "--frames-per-shard",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Frames per shard file of a new store group.",
)
@click.option(
    "--store-format",
    default=4,
    show_default=True,
    type=click.IntRange(2, 4),
    help="Format of a new store group: 4 = 2-D predictor with byte planes (smallest, fastest reads); "
    "3 and 2 (2-D predictor, row delta) for readers with a tiekd older than format 4.",
)
@_dataset_option
def cache_teacher(teacher_args, teacher_input, shard, **options) -> None:
    """Run a teacher once over a split and store its depth maps (stage one)."""
    from tiekd.pipeline.teachers.load import parse_teacher_args
    from tiekd.stages import cache_teacher as stage

    cfg = stage.CacheTeacherConfig(
        teacher_args=parse_teacher_args(teacher_args),
        teacher_input=_size(teacher_input, "--teacher-input"),
        shard=_shard(shard),
        **options,
    )
    click.echo(stage.report(stage.run(cfg)))


main.add_command(cache)


def _choices_methods():
    from tiekd.pipeline.methods import METHODS

    return METHODS


@main.command("train-student")
@click.option("--cache", help="Teacher store (all methods but supervised).")
@click.option("--teacher", help="Teacher group in the store [default: the only one].")
@click.option("--split-name", help="Split group in the store [default: the split file's stem or the only one].")
@click.option("--data-root", required=True, type=click.Path(path_type=Path), help="KITTI raw root.")
@click.option("--gt-root", type=click.Path(path_type=Path), help="Annotated depth root (supervised, validation).")
@click.option("--split", required=True, type=click.Path(path_type=Path), help="Training split file.")
@click.option(
    "--student",
    default="mobilenetv2",
    show_default=True,
    help="mobilenetv2, resnet18, resnet50 or any timm encoder name.",
)
@click.option("--method", default="tiekd", show_default=True, type=click.Choice(_choices_methods()))
@click.option("--decoder", default="standard", show_default=True, type=click.Choice(["standard", "light"]),
              help="The authors' decoder, or a light one (fewer channels at full resolution).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--epochs", default=24, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Samples per process (GPU)."
)
@click.option(
    "--accumulate",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Micro-batches per step: global batch = processes x batch size x this.",
)
@click.option("--sync-bn", is_flag=True, help="BatchNorm statistics over all processes (under torchrun).")
@click.option("--crop", metavar="HxW", help="Random training crop [default: the dataset's, KITTI 352x704].")
@click.option("--scale", default=1.0, show_default=True, help="Resize crops and maps by this factor (quick runs).")
@click.option("--lr", default=1e-3, show_default=True, help="Maximum learning rate (one-cycle).")
@click.option("--alpha", default=0.1, show_default=True, help="TIE-KD weight of the DPM term.")
@click.option(
    "--sigma",
    type=float,
    help="Std (m) of the teacher DPM [default: paper form the dataset's, KITTI 0.8; code form 0.5 as released].",
)
@click.option("--dpm-form", default="paper", show_default=True, type=click.Choice(["paper", "code"]))
@click.option("--n-bins", type=click.IntRange(min=2), help="DPM bins [default: the dataset's, KITTI 257].")
@click.option("--min-depth", type=float, help="Smallest depth (m): first bin edge [default: the dataset's, 1e-3].")
@click.option("--max-depth", type=float, help="Largest depth (m) [default: the dataset's, KITTI 80].")
@click.option(
    "--loss-top-row",
    type=int,
    help="First crop row of the TIE-KD loss [default: the dataset's, KITTI 110: the sky above has no LiDAR].",
)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N steps (the schedule spans them).")
@click.option("--val-split", type=click.Path(path_type=Path), help="Split evaluated every epoch; best.pt by RMSE.")
@click.option("--val-data-root", type=click.Path(path_type=Path), help="Its images [default: --data-root].")
@click.option("--val-gt-root", type=click.Path(path_type=Path), help="Its GT [default: --gt-root].")
@click.option(
    "--pretrained/--no-pretrained", default=True, show_default=True, help="Start from timm's ImageNet weights."
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="yes",
    default="no",
    type=click.Choice(["no", "yes", "auto"]),
    metavar="[auto]",
    help="Continue the run in --out from last.pt; 'auto': continue if there is one, else start (torchrun restarts).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--amp", is_flag=True, help="float16 autocast with loss scaling on CUDA.")
@click.option("--workers", default=default_workers(), show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--save-every", default=500, show_default=True, type=click.IntRange(min=1), help="Write last.pt every N steps too."
)
@_dataset_option
def train_student(**options) -> None:
    """Train a student from the teacher cache (stage two); under torchrun, in every process."""
    from tiekd.stages import train_student as stage

    text = stage.report(stage.run(train_student_config(**options)))
    if text:
        click.echo(text)


def train_student_config(crop, resume, **options):
    """The ``train-student`` options as its stage's config."""
    from tiekd.stages.training.config import TrainStudentConfig

    resume = {"no": False, "yes": True}.get(resume, resume)
    return TrainStudentConfig(crop=_size(crop, "--crop"), resume=resume, **options)


@main.command("recipes")
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the shipped recipes (one per row of the paper's KITTI table), or print recipe NAME."""
    from tiekd.stages.recipes import config_path, format_recipes, list_recipes

    click.echo(config_path(name).read_text() if name else format_recipes(list_recipes()), nl=not name)


@main.command("evaluate")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Student checkpoint to evaluate.")
@click.option("--cache", help="Teacher store to evaluate from its cached maps.")
@click.option("--teacher", help="Teacher group in the store.")
@click.option("--split-name", help="Split group in the store.")
@click.option("--data-root", required=True, type=click.Path(path_type=Path))
@click.option("--gt-root", required=True, type=click.Path(path_type=Path))
@click.option("--split", required=True, type=click.Path(path_type=Path))
@click.option(
    "--crop", type=click.Choice(["garg", "eigen", "none"]), help="Evaluation crop [default: the dataset's, KITTI garg]."
)
@click.option(
    "--garg-on",
    default="kb",
    show_default=True,
    type=click.Choice(["kb", "full"]),
    help="Garg/Eigen crop computed on the 352x1216 KB crop (authors, AdaBins) or the full image (BTS).",
)
@click.option("--flip-tta/--no-flip-tta", default=True, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write metrics as JSON.")
@click.option(
    "--save-images",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one labelled figure per image: input, depth, GT, error, DPM entropy (colour bars in metres).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--workers", default=default_workers(), show_default=True, type=click.IntRange(min=0))
@_dataset_option
def evaluate(**options) -> None:
    """Evaluate a student or a cached teacher under the dataset's protocol."""
    from tiekd.stages import evaluate as stage

    click.echo(stage.format_result(stage.run(stage.EvaluateConfig(**options))))


@main.command("export")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Student checkpoint to export.")
@click.option("--format", default="onnx", show_default=True, type=click.Choice(["onnx", "export", "checkpoint"]),
              help="ONNX model, torch.export program, or weights-only checkpoint (a small file to share).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--input", "input_size", metavar="HxW", help="Input size [default: the KB crop at the training scale].")
@click.option("--dynamic", is_flag=True, help="Any batch size (needed for flip TTA as a teacher).")
@click.option("--with-entropy", is_flag=True, help="Second output: the DPM entropy in nats (DPM students).")
def export(input_size, **options) -> None:
    """Export a student (RGB [0, 1] in, depth in metres out) and check it against the checkpoint."""
    from tiekd.stages import export as stage

    cfg = stage.ExportConfig(input_size=_size(input_size, "--input"), **options)
    click.echo(stage.report(stage.run(cfg)))


@main.command("explain")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="DPM student checkpoint.")
@click.option("--cache", help="Teacher store: teacher depth, teacher DPM and KL panels.")
@click.option("--teacher", help="Teacher group in the store.")
@click.option("--split-name", help="Split group in the store.")
@click.option("--data-root", required=True, type=click.Path(path_type=Path))
@click.option("--gt-root", required=True, type=click.Path(path_type=Path))
@click.option("--split", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for index.html.")
@click.option("--images", default=4, show_default=True, type=click.IntRange(min=1), help="First N records with GT.")
@click.option("--ids", multiple=True, help="RGB path of a record, as in the split (repeatable).")
@click.option("--pixel", "pixels", multiple=True, metavar="ROW,COL", help="Pixel on the cache crop (repeatable).")
@click.option("--crop", help="Evaluation crop of the automatic pixels and curves [default: the dataset's, KITTI garg].")
@click.option(
    "--evaluation", type=click.Path(path_type=Path), help="An `evaluate --json` file: also draw its set's curves."
)
@_dataset_option
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def explain(ids, pixels, **options) -> None:
    """Figures of what a DPM student believes, per image and per pixel, with an offline index.html."""
    from tiekd.stages import explain as stage

    cfg = stage.ExplainConfig(ids=tuple(ids), pixels=tuple(stage.parse_pixel(p) for p in pixels), **options)
    click.echo(stage.report(stage.run(cfg)))


@main.command("demo")
@click.option("--out", default="tiekd-demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--quick", is_flag=True, help="About a minute: fewer frames, lower resolution, a few steps.")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps of each student [default: 120, quick 3].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@_dataset_option
@click.pass_context
def demo(ctx: click.Context, **options) -> None:
    """The whole pipeline on the embedded sample: teacher, cache, students, evaluation, table, pictures."""
    from tiekd.stages import demo as stage

    threads = ctx.meta.get("tiekd.threads")
    path = stage.run(stage.DemoConfig(**options, **({"threads": threads} if threads else {})))
    click.echo(f"results: {path} (picture: {path.parent / 'comparison.png'})")


if __name__ == "__main__":
    main()
