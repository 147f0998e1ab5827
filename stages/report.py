"""Stage `report`: tables and figures of every finished student run (and, for maintainers, the results
block of docs/RESULTS.md)."""

from pathlib import Path

import click

from pipeline.results.report import write_report


@click.command("report")
@click.option("--runs", type=click.Path(path_type=Path), required=True, help="Directory of run directories.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Markdown file to write; the PNG figures go next to it.")
@click.option("--readme", type=click.Path(path_type=Path),
              help="Also rewrite this document's results block (figures copied to results/ beside it).")
def report(runs, out, readme):
    """Write and print the results: who won, every arm, edge exports, figures."""
    click.echo(write_report(runs, out, readme), nl=False)
