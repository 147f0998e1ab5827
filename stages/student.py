"""Stage `student`: train one student from the cache on the CPU and write its run directory."""

import click

from pipeline.config import StudentConfig, from_options
from pipeline.student.distill import train_student
from stages.options import (cache_option, config_option, dataset_option, input_options, log_option, path_option, setting_option,
                            teacher_options, trust_option)


@click.command("student")
@cache_option
@dataset_option
@path_option("--out-dir", "Run directory to write.")
@path_option("--teacher-record", "teacher.json; when given, the cache must come from that teacher.", required=False)
@setting_option("STUDENT")
@setting_option("T", "--T", "T")
@setting_option("ALPHA")
@setting_option("SEED")
@setting_option("EPOCHS")
@config_option(StudentConfig, "batch_size", "Images per training step.")
@config_option(StudentConfig, "lr", "Peak learning rate of the one-cycle schedule.")
@input_options
@teacher_options
@setting_option("THREADS")
@log_option
@config_option(StudentConfig, "cache_memory_mb", "Hold the cache in memory up to this size in MB, else stream it.")
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
