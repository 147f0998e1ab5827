"""Stage `teacher`: train the teacher once and record its test accuracy."""

from pathlib import Path

import click

from pipeline.config import TeacherConfig, from_options
from pipeline.models import list_teachers
from pipeline.teacher.fit import train_teacher
from stages.options import log_option


@click.command("teacher")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--out-dir", type=click.Path(path_type=Path), required=True, help="Writes teacher.pt and teacher.json.")
@click.option("--arch", help=f"'auto' (resnet18 on a GPU, cnn on the CPU) or one of: {', '.join(list_teachers())}.")
@click.option("--epochs", type=int, help="0 or unset: 30 on a GPU, 5 on the CPU.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@log_option
@click.option("--threads", type=int, help="torch CPU threads (0: torch's default).")
def teacher(**options):
    """Train the teacher and save checkpoint + teacher.json."""
    record = train_teacher(from_options(TeacherConfig, **options))
    click.echo(f"teacher {record['arch']} ({record['params']:,} params) on {record['device_name']}: "
               f"test accuracy {100 * record['test_acc']:.2f}% in {record['train_seconds']:.0f} s")
