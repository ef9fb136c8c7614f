"""``tiekd cache info|verify|rm``: the store's commands, added to the ``tiekd`` group by cli.py.

Each command imports its stage module when it runs, as in :mod:`tiekd.cli`.
"""

from __future__ import annotations

import json

import click

from tiekd import cli_options as shared
from tiekd.cli_options import TiekdCommand, s3_endpoint


class CacheGroup(click.Group):
    """Its commands take ``--config`` as every tiekd command does."""

    command_class = TiekdCommand


@click.group("cache", cls=CacheGroup)
def cache() -> None:
    """Inspect and check a teacher store."""


@cache.command("info")
@click.argument("store")
@s3_endpoint
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_info(store: str, as_json: bool) -> None:
    """Teachers, splits, completion and size of STORE."""
    from tiekd.stages.cache_info import format_info, info  # lazy: see tiekd.cli

    summary = info(store)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


@cache.command("verify")
@click.argument("store")
@s3_endpoint
@click.option("--repair", is_flag=True, help="Rebuild lost array metadata and mark damaged frames not done.")
def cache_verify(store: str, repair: bool) -> None:
    """Read back every stored map of STORE and check its checksum, mask, shape and values."""
    from tiekd.stages.cache_info import report_verification, verify  # lazy: see tiekd.cli

    click.echo(report_verification(store, verify(store, repair=repair)))


@cache.command("rm")
@click.argument("store")
@s3_endpoint
@click.option("--teacher", help="Teacher group to remove (all its splits unless --split).")
@click.option("--split", help="Only this split group of the teacher.")
@click.option("--inputs", metavar="SPLIT", help="Instead of a teacher's maps: the packed split SPLIT (cache pack).")
@click.option("--force", is_flag=True, help="Also remove incomplete groups (when nothing writes them).")
def cache_rm(store: str, teacher: str | None, split: str | None, inputs: str | None, force: bool) -> None:
    """Remove one teacher's maps (or one split of them), or one packed split, from STORE."""
    from tiekd.stages.cache_rm import remove, remove_inputs  # lazy: see tiekd.cli

    if (teacher is None) == (inputs is None) or (inputs is not None and split is not None):
        raise click.UsageError("give --teacher T [--split S] (a teacher's maps) or --inputs SPLIT (a packed split)")
    if inputs:
        removed = remove_inputs(store, split=inputs, force=force)
    else:
        removed = remove(store, teacher=teacher, split=split, force=force)
    click.echo("\n".join(f"removed {location}" for location in removed))


@cache.command("pack")
@shared.data_root(required=False)
@shared.split_option(required=False)
@shared.image_sources
@click.option("--out", required=True, help="Store path to pack into (beside its teacher groups).")
@s3_endpoint
@shared.gt_root(
    required=False, what="packed with the images (needed to train supervised, validate, evaluate and explain from the store)"
)
@click.option("--split-name", help="Split group name in the store [default: the split file's stem].")
@click.option(
    "--shard", default="0/1", show_default=True, metavar="I/N",
    help="Fill store shards I, I+N, I+2N, ... of the split (N processes).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing packed split made differently.")
@click.option(
    "--frames-per-shard", default=32, show_default=True, type=click.IntRange(min=1),
    help="Frames per shard file of a new packed split (a resumed one keeps its own).",
)  # fmt: skip
@shared.dataset
def cache_pack(shard: str, images, **options) -> None:
    """Pack a split's images and ground truth, or image sources, into STORE, so nodes train and evaluate
    without the files."""
    from tiekd.stages import pack_inputs as stage  # lazy: see tiekd.cli

    cfg = stage.PackConfig(shard=shared.shard(shard), images=tuple(images), **options)
    click.echo(stage.report(stage.run(cfg)))
