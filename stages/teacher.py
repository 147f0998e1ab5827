"""Stage `teacher`: train the teacher once and record its test accuracy."""

import click

from pipeline.config import TeacherConfig, from_options
from pipeline.models import list_teachers
from pipeline.teacher.fit import train_teacher
from stages.options import config_option, dataset_option, log_option, path_option, setting_option


@click.command("teacher")
@dataset_option
@path_option("--out-dir", "Writes teacher.pt and teacher.json.")
@click.option("--arch", help=f"'auto' (resnet18 on a GPU, cnn on the CPU) or one of: {', '.join(list_teachers())}.")
@setting_option("TEACHER_EPOCHS", "--epochs", "epochs")
@setting_option("DEVICE")
@setting_option("TEACHER_SEED", "--seed", "seed")
@config_option(TeacherConfig, "batch_size", "Images per training step.")
@config_option(TeacherConfig, "lr", "Peak learning rate of the one-cycle schedule.")
@log_option
@setting_option("THREADS")
def teacher(**options):
    """Train the teacher and save checkpoint + teacher.json."""
    record = train_teacher(from_options(TeacherConfig, **options))
    click.echo(f"teacher {record['arch']} ({record['params']:,} params) on {record['device_name']}: "
               f"test accuracy {100 * record['test_acc']:.2f}% in {record['train_seconds']:.0f} s")
