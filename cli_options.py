"""Options that several ``tiekd`` commands share, each written once, and ``--config FILE|RECIPE``.

A shared option's help is dataset-neutral (the same flag reads KITTI or NYU), so the copies of a
flag cannot drift apart. ``--config`` is an option of every command (:class:`TiekdCommand`): the
file's options become the command's defaults (click's default map), so flags given on the command
line win; keys name options as their flags do (dashes or underscores).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import click
from click.core import ParameterSource

from tiekd.data.registry import DATASETS, DEFAULT_DATASET, get_dataset
from tiekd.pipeline.errors import ConfigError
from tiekd.stages.config_file import option_key, read_config
from tiekd.stages.recipes import config_path
from tiekd.stages.runtime import DEVICES, default_workers

PATH = click.Path(path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


def size(value: str | None, flag: str) -> tuple[int, int] | None:
    """``"352x704"`` -> (352, 704); None stays None."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH, e.g. 352x704", param_hint=flag)
    return int(match[1]), int(match[2])


def shard(value: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4)."""
    match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise click.BadParameter(f"{value!r} is not I/N with 0 <= I < N, e.g. 0/4", param_hint="--shard")
    return int(match[1]), int(match[2])


def data_root(function=None, *, required: bool = True):
    """``--data-root``: where the split's image paths are relative to; ``@data_root(required=False)``
    where a packed store (``--inputs``), image sources or a store's own record of them can stand in
    for the files."""
    option = click.option(
        "--data-root",
        required=required,
        type=PATH,
        help="Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat).",
    )
    return option if function is None else option(function)


def inputs(function):
    """``--inputs``: a store holding the split packed (``tiekd cache pack``)."""
    return click.option(
        "--inputs",
        help="Store holding the split's images and GT packed (tiekd cache pack), read when --data-root is not given "
        "[default: the --cache store].",
    )(function)


def gt_root(*, required: bool, what: str):
    """``--gt-root``: where the split's GT paths are relative to; ``what`` says what it serves."""
    return click.option(
        "--gt-root",
        required=required,
        type=PATH,
        help="Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); "
        f"{what}.",
    )


def split_option(*, required: bool):
    """``--split``: the split file."""
    return click.option(
        "--split", required=required, type=PATH, help="Split file, one 'RGB GT|None FOCAL' record a line."
    )


def image_sources(function):
    """``--images`` (repeatable) and how their frames are taken (``--every``, ``--start``, ``--end``) and
    fitted to the dataset's size (``--fit``): what stage one and ``cache pack`` read instead of a split."""
    options = [
        click.option("--images", multiple=True, metavar="PATH|GLOB",
                     help="Images instead of a split: a folder (recursive), a glob, a list file or a video "
                     "(repeatable)."),
        click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Take every N-th frame of a video."),
        click.option("--start", default=0.0, show_default=True, type=click.FloatRange(min=0),
                     help="Take video frames from this time (seconds)."),
        click.option("--end", type=float, help="Take video frames before this time (seconds) [default: to the end]."),
        click.option("--fit", default="whole", show_default=True, type=click.Choice(["whole", "crop"]),
                     help="How an image becomes a map of the dataset's size: whole (resized, refused if its shape "
                     "differs) or crop (the largest region of the map's shape, placed as the dataset's crop, resized)."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _set_s3_endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from tiekd.pipeline.store.s3 import set_endpoint  # lazy: zarr's import is not needed for --help

    set_endpoint(value)


def s3_endpoint(function):
    """``--s3-endpoint URL``: the S3-compatible server of ``s3://`` stores, for this process and the
    workers it starts, as the standard ``AWS_ENDPOINT_URL`` (pipeline/store/s3.py)."""
    return click.option(
        "--s3-endpoint",
        metavar="URL",
        expose_value=False,
        is_eager=True,
        callback=_set_s3_endpoint,
        help="S3-compatible server of s3:// stores, e.g. http://127.0.0.1:8333 (as AWS_ENDPOINT_URL; default: AWS).",
    )(function)


def split(function):
    """``--split``, required."""
    return split_option(required=True)(function)


def store(function):
    """``--cache``, ``--teacher``, ``--split-name`` and ``--s3-endpoint``: one teacher group of a store to read."""
    function = s3_endpoint(function)
    options = (
        click.option("--cache", help="Teacher store: a path or fsspec URL."),
        click.option("--teacher", help="Teacher group in the store [default: the only one]."),
        click.option(
            "--split-name", help="Split group in the store [default: the split file's stem, or the only one]."
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


def checkpoint(*, required: bool, what: str):
    """``--checkpoint``: a student checkpoint; ``what`` says which."""
    return click.option("--checkpoint", required=required, type=PATH, help=f"Student checkpoint ({what}).")


def leakage(function):
    """``--test-split``, ``--test-data-root`` and ``--allow-leakage``: the leakage guard (data/leakage.py)."""
    options = (
        click.option("--test-split", type=PATH, help="Evaluation split whose images must not be trained on (the "
                     "leakage guard): same content, same path, or for KITTI the same drive."),
        click.option("--test-data-root", type=PATH, help="Images of --test-split [default: --data-root]."),
        click.option("--allow-leakage", is_flag=True, help="Use frames the leakage guard finds in --test-split "
                     "anyway (recorded with the store or run)."),
    )  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def device(function):
    """``--device auto|cpu|cuda``."""
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="auto",
        show_default=True,
        help="Where to compute: auto = cuda when available, else cpu.",
    )(function)


def workers(function):
    """``--workers``: DataLoader worker processes."""
    return click.option(
        "--workers",
        default=default_workers(),
        show_default=True,
        type=click.IntRange(min=0),
        help="DataLoader worker processes that read and decode ahead (0: in this process).",
    )(function)


def flip_tta(function):
    """``--flip-tta/--no-flip-tta``."""
    return click.option(
        "--flip-tta/--no-flip-tta",
        default=True,
        show_default=True,
        help="Average with the flipped-back prediction of the mirrored image.",
    )(function)


class DatasetName(click.ParamType):
    """A built-in dataset's name or a description file ``PATH.yaml`` (:mod:`tiekd.data.own`), checked
    when parsed so a bad file is one line before any work."""

    name = "dataset"

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(DATASETS)}|PATH.yaml]"

    def convert(self, value, param, ctx):
        get_dataset(str(value))  # a ConfigError (one line) for an unknown name or a bad file
        return str(value)


def dataset(function):
    """``--dataset kitti|nyu|PATH.yaml``: the description whose readers, crops and presets a stage uses."""
    return click.option(
        "--dataset",
        type=DatasetName(),
        default=DEFAULT_DATASET,
        show_default=True,
        help="Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins "
        "and sigma follow it unless given.",
    )(function)


def _unknown_key(key: str, known: list[str], path: Path, command: str) -> ConfigError:
    """The one line for a config key that names no option, with the closest option if one is near."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; fix the file"
    return ConfigError(f"--config {path}: {key!r} is not an option of `tiekd {command}`{hint}")


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE|RECIPE``: the file's options become the command's defaults (flags win)."""
    if value is None:
        return
    path = config_path(value)
    names = {option_key(opt): p.name for p in ctx.command.params if p.name != "config" for opt in p.opts}
    names |= {p.name: p.name for p in ctx.command.params if p.name != "config"}
    options = read_config(path)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise _unknown_key(unknown[0], sorted(names), path, ctx.info_name)
    params = {p.name: p for p in ctx.command.params}
    for key, value in options.items():
        _check_value(ctx, params[names[key]], key, value, path)
    ctx.default_map = (ctx.default_map or {}) | {names[key]: value for key, value in options.items()}
    ctx.meta["tiekd.config"] = (path, {names[key]: value for key, value in options.items()})


def option_sources(ctx: click.Context) -> dict[str, str]:
    """Where each option's value came from: "command line", "--config PATH" or "default"."""
    path = ctx.meta.get("tiekd.config", ("?", {}))[0]
    names = {ParameterSource.COMMANDLINE: "command line", ParameterSource.DEFAULT_MAP: f"--config {path}"}
    return {name: names.get(ctx.get_parameter_source(name), "default") for name in ctx.params}


def _check_config_dataset(ctx: click.Context) -> None:
    """Refuse a --dataset other than the one the --config file (a recipe, a run's config.yaml) names:
    its bins, sigma, crops and loss rows are that dataset's, and would silently stay."""
    path, options = ctx.meta.get("tiekd.config", (None, {}))
    wanted, given = options.get("dataset"), ctx.params.get("dataset")
    if wanted is not None and given is not None and wanted != given:
        raise ConfigError(
            f"--dataset {given}: --config {path} is a {wanted} configuration (its bins, sigma, crops and loss rows); "
            f"use a {given} recipe (`tiekd recipes`) or leave --dataset out"
        )


def _check_value(ctx: click.Context, param: click.Parameter, key: str, value, path: Path) -> None:
    """Refuse, in one line, a config value its option cannot take (a list for a number, a word
    outside a choice), before click would fail on it with a traceback."""
    if isinstance(value, (dict, list)) and not param.multiple:
        raise ConfigError(f"--config {path}: {key}: {value!r} is not a single value; give one {param.type.name}")
    try:
        param.type_cast_value(ctx, value)
    except (click.BadParameter, TypeError, ValueError) as e:
        reason = e.message.rstrip(".") if isinstance(e, click.BadParameter) else f"{value!r} is not a {param.type.name}"
        raise ConfigError(f"--config {path}: {key}: {reason}; fix the file") from None


ONE_SOURCE = ("teacher", "cache", "checkpoint")
"""Options that name the one model or store a command reads: given twice, they look like several
(a mixture of teachers) while click would keep the last silently, so they are refused. Other
options keep click's rule, the last one wins, which scripts use to override a value."""


def _refuse_repeated(command: click.Command, args: list[str]) -> None:
    """Refuse a ONE_SOURCE option given twice."""
    single = {
        name: param
        for param in command.params
        if isinstance(param, click.Option) and param.name in ONE_SOURCE and not param.multiple
        for name in (*param.opts, *param.secondary_opts)
    }
    seen: dict[str, list[str]] = {}
    for arg in args:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name in single:
            seen.setdefault(single[name].name, []).append(name)
    for names in seen.values():
        if len(names) > 1:
            raise click.UsageError(f"{names[0]} is given {len(names)} times ({', '.join(names)}); give it once")


class TiekdCommand(click.Command):
    """A command that also takes ``--config`` (read before every other option), refuses another
    ``--dataset`` than the one its file names, and refuses a ONE_SOURCE option given twice."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _refuse_repeated(self, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        _check_config_dataset(ctx)
        return super().invoke(ctx)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.insert(
            0,
            click.Option(
                ["--config"],
                metavar="FILE|RECIPE",
                is_eager=True,
                expose_value=False,
                callback=_apply_config,
                help="YAML options (a run's config.yaml, or a recipe from `tiekd recipes`); flags win.",
            ),
        )
