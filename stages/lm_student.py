"""Stage `lm-student`: train one language-model student from a per-token cache on the CPU."""

import click

from pipeline.config import LMStudentConfig, from_options
from pipeline.student.lm_distill import train_lm_student
from stages.options import config_options, echo_entry


@click.command("lm-student")
@config_options(LMStudentConfig)
def lm_student(**options):
    """Train an LM student with ALPHA·T²·KL on the cache's top-k + tail and (1-ALPHA)·next-token CE (resumable)."""
    m = train_lm_student(from_options(LMStudentConfig, **options), on_eval=echo_entry)
    click.echo(f"{options['out_dir']}: {m['student']} ({m['params']:,} params) T={m['T']:g} ALPHA={m['alpha']:g}: "
               f"{m['test_bits_per_byte']:.3f} test bits per byte, {100 * m['teacher_agreement']:.1f}% top-1 agreement "
               f"with the teacher, {m['tokens_per_second']:.0f} tokens/s")
