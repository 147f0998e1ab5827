"""Stage `lm-teacher`: train a causal language model on a prepared text file to teach LM students."""

import click

from pipeline.config import LMTeacherConfig, from_options
from pipeline.teacher.lm_fit import train_lm_teacher
from stages.options import config_options, echo_entry


@click.command("lm-teacher")
@config_options(LMTeacherConfig)
def lm_teacher(**options):
    """Train a causal LM teacher (resumable: the same command continues a killed run)."""
    r = train_lm_teacher(from_options(LMTeacherConfig, **options), on_eval=echo_entry)
    click.echo(f"teacher {r['arch']} ({r['params']:,} params) on {r['device_name']}: {r['val_bits_per_byte']:.3f} "
               f"bits per byte on val, {r['test_bits_per_byte']:.3f} on test, in {r['train_seconds']:.0f} s")
