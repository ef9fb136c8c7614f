"""``tiekd compare``: runs side by side, added to the ``tiekd`` group by cli.py.

The command imports its stage module when it runs, as in :mod:`tiekd.cli`.
"""

from __future__ import annotations

from pathlib import Path

import click

from tiekd.cli_options import PATH, TiekdCommand


@click.command("compare", cls=TiekdCommand)
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", is_flag=True, help="Print the table as JSON (every metric, mean, std and n of each group) "
              "instead of markdown.")  # fmt: skip
@click.option("--csv", is_flag=True, help="Print the table as CSV (a mean and a std column per number) instead of "
              "markdown.")  # fmt: skip
@click.option("--figure", type=PATH, help="Write the runs' validation curves (AbsRel, RMSE, d1 against step; one "
              "colour per group) to this PNG.")  # fmt: skip
def compare(runs, **options) -> None:
    """Training runs side by side: the options that differ, best and last validation and test metrics,
    parameters, training time; runs that differ only in seed as mean ± std."""
    from tiekd.stages import compare as stage  # lazy: see the module docstring

    result = stage.run(stage.CompareConfig(runs=tuple(runs), **options))
    click.echo(stage.report(result))
    if result.figure is not None:
        click.echo(f"figure: {result.figure}", err=True)
