"""Stage `report`: the results table of every finished student run."""

from pathlib import Path

import click

from pipeline.report import write_report


@click.command("report")
@click.option("--runs", type=click.Path(path_type=Path), required=True, help="Directory of run directories.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Markdown file to write.")
def report(runs, out):
    """Write and print the scratch-vs-distilled results table."""
    click.echo(write_report(runs, out), nl=False)
