"""Stage `lm-teacher`: train a causal language model on a prepared text file to teach LM students."""

import json

import click

from pipeline.config import LMTeacherConfig, from_options
from pipeline.teacher.fit_lm import train_lm_teacher
from stages.options import config_option, path_option, setting_option


@click.command("lm-teacher")
@path_option("--text", "Prepared text file (softcache data --dataset stdlib).")
@path_option("--out-dir", "Writes teacher.pt and teacher.json.")
@click.option("--arch", help="A registered language model (pipeline.models_lm; default lm-teacher).")
@config_option(LMTeacherConfig, "context", "Tokens a window feeds the model")
@config_option(LMTeacherConfig, "steps", "Optimiser steps")
@config_option(LMTeacherConfig, "batch_size", "Windows per step")
@config_option(LMTeacherConfig, "lr", "Peak learning rate of the one-cycle schedule")
@config_option(LMTeacherConfig, "eval_every", "Steps between validation scores and saved states")
@setting_option("TEACHER_SEED", "--seed", "seed")
@setting_option("DEVICE")
@setting_option("THREADS")
def lm_teacher(**options):
    """Train a causal LM teacher (resumable: the same command continues a killed run)."""
    say = lambda e: click.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}),  # noqa: E731
                               err=True)
    r = train_lm_teacher(from_options(LMTeacherConfig, **options), on_eval=say)
    click.echo(f"teacher {r['arch']} ({r['params']:,} params) on {r['device_name']}: {r['val_bits_per_byte']:.3f} "
               f"bits per byte on val, {r['test_bits_per_byte']:.3f} on test, in {r['train_seconds']:.0f} s")
