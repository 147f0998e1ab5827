"""Stage `teacher`: train the teacher once and record its test accuracy."""

import click

from pipeline.config import TeacherConfig, from_options
from pipeline.teacher.fit import train_teacher
from stages.options import config_options


@click.command("teacher")
@config_options(TeacherConfig)
def teacher(**options):
    """Train the teacher and save checkpoint + teacher.json."""
    record = train_teacher(from_options(TeacherConfig, **options))
    click.echo(f"teacher {record['arch']} ({record['params']:,} params) on {record['device_name']}: "
               f"test accuracy {100 * record['test_acc']:.2f}% in {record['train_seconds']:.0f} s")
