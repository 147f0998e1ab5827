"""Stage `student`: train one student from the cache on the CPU and write its run directory."""

from pathlib import Path

import click

from pipeline.config import StudentConfig, from_options
from pipeline.models import list_students
from pipeline.settings import DEFAULTS
from pipeline.student.distill import train_student
from stages.options import input_options, log_option, teacher_options, trust_option


@click.command("student")
@click.option("--cache", type=click.Path(path_type=Path), required=True, help="Teacher-logit cache (.h5).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--out-dir", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
@click.option("--teacher-record", type=click.Path(path_type=Path),
              help="teacher.json; when given, the cache must come from that teacher.")
@click.option("--student", help=f"One of: {', '.join(list_students())} (default {DEFAULTS['STUDENT']}).")
@click.option("--T", "T", type=float, help=f"Distillation temperature (> 0, default {DEFAULTS['T']}).")
@click.option("--alpha", type=float,
              help=f"Weight of the soft term in [0, 1] (default {DEFAULTS['ALPHA']}; 0 = scratch).")
@click.option("--seed", type=int, help=f"Seed (default {DEFAULTS['SEED']}).")
@click.option("--epochs", type=int, help=f"Epochs (default {DEFAULTS['EPOCHS']}).")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@input_options
@teacher_options
@click.option("--threads", type=int, help="torch CPU threads (0: torch's default).")
@log_option
@click.option("--cache-memory-mb", type=int, help="Hold the cache in memory up to this size, else stream it (4096).")
@trust_option("trust_undigested_cache")
def student(**options):
    """Train a student with the distillation loss from cached soft targets."""
    m = train_student(from_options(StudentConfig, **options))
    val = f", held-out {100 * m['val_acc']:.2f}%" if "val_acc" in m else ""
    val += "" if m["labels"] is None else f", {m['labels']:,} labels"
    val += f", + {m['transfer_rows']:,} transfer rows" if m["transfer_rows"] else ""
    click.echo(f"{options['out_dir']}: {m['student']} ({m['params']:,} params) T={m['T']:g} "
               f"ALPHA={m['alpha']:g}, {m['inputs']}: test accuracy {100 * m['test_acc']:.2f}%{val} "
               f"(teacher {100 * m['teacher_test_acc']:.2f}%), {m['seconds_per_epoch']:.1f} s/epoch")
