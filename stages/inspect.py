"""Command `inspect`: what a cache holds, and what its soft targets look like at a temperature."""

from pathlib import Path

import click

from pipeline.cache.describe import describe
from pipeline.settings import DEFAULTS
from stages.options import setting_option, trust_option


@click.command("inspect")
@click.argument("cache", type=click.Path(path_type=Path))
@setting_option("T", "--T", "T", default=DEFAULTS["T"])
@trust_option()
def inspect(cache, T, trust):
    """Print what a cache holds (it is verified first)."""
    rows = describe(cache, T, trust)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
