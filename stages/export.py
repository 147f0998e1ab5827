"""Stage `export`: turn a finished student run (images or a language model) into checked edge files."""

import click

from pipeline.config import ExportConfig, from_options
from pipeline.results.export_summary import export_any
from stages.options import config_options


@click.command("export")
@config_options(ExportConfig)
def export(**options):
    """Export a student for edge inference and prove it matches the trained model."""
    for line in export_any(from_options(ExportConfig, **options)):
        click.echo(line)
