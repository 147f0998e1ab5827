"""Stage `lm-teacher`: train a causal language model on a prepared text file to teach LM students."""

import json

import click

from pipeline.config import LMTeacherConfig, from_options
from pipeline.teacher.fit_lm import train_lm_teacher
from stages.options import config_options


@click.command("lm-teacher")
@config_options(LMTeacherConfig)
def lm_teacher(**options):
    """Train a causal LM teacher (resumable: the same command continues a killed run)."""
    say = lambda e: click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}),  # noqa: E731
                               err=True)
    r = train_lm_teacher(from_options(LMTeacherConfig, **options), on_eval=say)
    click.echo(f"teacher {r['arch']} ({r['params']:,} params) on {r['device_name']}: {r['val_bits_per_byte']:.3f} "
               f"bits per byte on val, {r['test_bits_per_byte']:.3f} on test, in {r['train_seconds']:.0f} s")
