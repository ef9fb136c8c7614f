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
from tiekd.cli_compare import compare
from tiekd.cli_export import export
from tiekd.cli_options import FOLDER, PATH, TiekdCommand, size
from tiekd.cli_train import train_student
from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import TiekdError, out_of_memory
from tiekd.pipeline.files import require_writable_folder, write_fault, writing_to
from tiekd.pipeline.teachers.load import parse_teacher_args
from tiekd.stages.recipes import config_path, format_recipes, list_recipes
from tiekd.stages.runtime import set_threads


class TiekdGroup(click.Group):
    """A group that turns allocation failures and writes refused by the disk (full, read-only) into
    one line too, and shows the traceback behind an error when ``--verbose`` was given."""

    command_class = TiekdCommand
    group_class = type

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TiekdError:
            if ctx.meta.get("tiekd.verbose"):
                traceback.print_exc()
            raise
        except Exception as e:  # re-raised unless it is one of the two
            error = out_of_memory(e, options=_options_of(self, ctx)) or write_fault(e)
            if error is None:
                raise
            if ctx.meta.get("tiekd.verbose"):
                traceback.print_exc()
            raise error from e


def _options_of(group: click.Group, ctx: click.Context) -> set[str]:
    """The option names of the command ``ctx`` ran (none for ``cache``'s, which set no sizes)."""
    command = group.get_command(ctx, ctx.invoked_subcommand or "")
    return {name for param in getattr(command, "params", []) for name in param.opts}


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
@click.option("--unlabelled", "n_unlabelled", default=0, show_default=True, type=click.IntRange(min=0),
              help="Extra images without GT, of scenes of their own (for cache-teacher --images).")  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives identical files.")
@shared.dataset
def sample_data(out: Path, n_train: int, n_test: int, n_unlabelled: int, seed: int, dataset: str) -> None:
    """Write a small procedural dataset in the dataset's layout to OUT (KITTI: streets; NYU: rooms)."""
    require_writable_folder(out, flag="OUT")
    with writing_to(out):
        paths = get_dataset(dataset).write_sample(
            out, n_train=n_train, n_test=n_test, seed=seed, n_unlabelled=n_unlabelled
        )
    unlabelled = f" and {n_unlabelled} unlabelled images" if n_unlabelled else ""
    click.echo(f"wrote {n_train} train and {n_test} test frames{unlabelled} to {out}")
    click.echo(f"  train: --data-root {paths.data_root} --gt-root {paths.gt_root} --split {paths.train_split}")
    click.echo(f"  test:  --data-root {paths.eval_data_root} --gt-root {paths.eval_gt_root} --split {paths.test_split}")
    click.echo(f"  (dense GT: {paths.dense_gt_root})")
    if n_unlabelled:
        fit = " --fit crop" if dataset == "kitti" else ""
        click.echo(f"  unlabelled (no GT): cache-teacher --images {paths.unlabelled}{fit}")


@main.command("cache-teacher")
@click.option(
    "--teacher",
    required=True,
    help="Teacher spec KIND:TARGET, KIND one of export, torchscript, python, hf, checkpoint, onnx.",
)
@shared.data_root(required=False)
@shared.split_option(required=False)
@shared.image_sources
@click.option("--teacher-output", default="metric", show_default=True,
              type=click.Choice(["metric", "relative-depth", "relative-inverse"]),
              help="What the teacher predicts: metric depth, or depth / inverse depth (disparity) up to scale and "
              "shift, aligned per frame to --gt-root's GT or --align-to's maps.")  # fmt: skip
@click.option("--align-to", metavar="STORE/TEACHER/SPLIT",
              help="A metric teacher's group of the same frames that a relative teacher is aligned to where a frame "
              "has no GT.")  # fmt: skip
@click.option("--out", required=True, help="Store path or fsspec URL.")
@shared.s3_endpoint
@shared.leakage
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
@click.option("--with-inputs", is_flag=True, help="Also pack the split's images (and GT, with --gt-root) into the "
              "store, as `tiekd cache pack` does.")  # fmt: skip
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
def cache_teacher(teacher_args, teacher_input, shard, images, **options) -> None:
    """Run a teacher once over a split, or over any images and videos, and store its depth maps (stage one)."""
    from tiekd.stages import cache_teacher as stage  # lazy: see the module docstring

    cfg = stage.CacheTeacherConfig(
        images=tuple(images),
        teacher_args=parse_teacher_args(teacher_args),
        teacher_input=size(teacher_input, "--teacher-input"),
        shard=shared.shard(shard),
        **options,
    )
    click.echo(stage.report(stage.run(cfg)))


main.add_command(cache)
main.add_command(train_student)
main.add_command(compare)
main.add_command(export)


@main.command("recipes")
@click.argument("name", required=False)
def recipes(name: str | None) -> None:
    """List the shipped recipes (one per row of the authors' KITTI and NYU tables), or print recipe NAME."""
    click.echo(config_path(name).read_text() if name else format_recipes(list_recipes()), nl=not name)


@main.command("evaluate")
@shared.checkpoint(required=False, what="exclusive with --cache")
@shared.store
@shared.data_root(required=False)
@shared.inputs
@shared.gt_root(required=False, what="the depth scored")
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


@main.command("explain")
@shared.checkpoint(required=True, what="a DPM student")
@shared.store
@shared.data_root(required=False)
@shared.inputs
@shared.gt_root(required=False, what="the GT drawn and scored")
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
