"""``--config FILE|RECIPE``, an option of every ``tiekd`` command (:class:`TiekdCommand`).

The file's options become the command's defaults (click's default map), so flags given on the
command line win; keys name options as their flags do (dashes or underscores).
"""

from __future__ import annotations

import click


def _apply_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE|RECIPE``: the file's options become the command's defaults (flags win)."""
    if value is None:
        return
    from tiekd.pipeline.errors import ConfigError
    from tiekd.stages.config_file import option_key, read_config
    from tiekd.stages.recipes import config_path

    path = config_path(value)
    names = {option_key(opt): p.name for p in ctx.command.params if p.name != "config" for opt in p.opts}
    names |= {p.name: p.name for p in ctx.command.params if p.name != "config"}
    options = read_config(path)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"--config {path}: {unknown[0]!r} is not an option of `tiekd {ctx.info_name}`; fix the file")
    ctx.default_map = (ctx.default_map or {}) | {names[key]: value for key, value in options.items()}


class TiekdCommand(click.Command):
    """A command that also takes ``--config`` (read before every other option)."""

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

