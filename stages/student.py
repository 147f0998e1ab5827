"""Stage `student`: train one student from the cache on the CPU and write its run directory."""

import click

from pipeline.config import StudentConfig, from_options
from pipeline.student.distill import train_student
from stages.options import config_options, labels_option


@click.command("student")
@config_options(StudentConfig, override={"labels": labels_option})
def student(**options):
    """Train a student with the distillation loss from cached soft targets."""
    m = train_student(from_options(StudentConfig, **options))
    val = f", held-out {100 * m['val_acc']:.2f}%" if "val_acc" in m else ""
    val += "" if m["labels"] is None else f", {m['labels']:,} labels"
    val += f", + {m['transfer_rows']:,} transfer rows" if m["transfer_rows"] else ""
    click.echo(f"{options['out_dir']}: {m['student']} ({m['params']:,} params) T={m['T']:g} "
               f"ALPHA={m['alpha']:g}, {m['inputs']}: test accuracy {100 * m['test_acc']:.2f}%{val} "
               f"(teacher {100 * m['teacher_test_acc']:.2f}%), {m['seconds_per_epoch']:.1f} s/epoch")
