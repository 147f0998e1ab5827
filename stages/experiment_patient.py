"""Stage `experiment-patient`: scratch vs clean-target KD vs function matching at every schedule length."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import PatientExperimentConfig, StudentConfig, from_options
from pipeline.experiments.patient import patient_report, run_patient_experiment
from pipeline.settings import DEFAULTS
from stages.options import (
    advance,
    experiment_options,
    grid_values,
    log_option,
    teacher_options,
)


@click.command("experiment-patient")
@experiment_options("Cache with a mixup view bank.", "patient-experiment.md/.json/.png")
@click.option("--students", help="Space-separated student names (default: STUDENT's default).")
@click.option("--lengths", help=f"Schedule lengths in epochs (default {DEFAULTS['LENGTHS']}).")
@click.option("--Ts", "Ts", help="Temperatures the clean-target arm chooses from (default 1 4).")
@click.option("--alphas", help="ALPHA values the clean-target arm chooses from, > 0 (default 0.5 0.9).")
@click.option("--seeds", help="Seeds of the final runs (default 0 1 2).")
@click.option("--holdout", type=int,
              help=f"Training rows held out for tuning (default {DEFAULTS['EXPERIMENT_HOLDOUT']}).")
@click.option("--replay", type=int, help="Views function matching replays (default 0: all cached, or the "
              "largest of --banks).")
@click.option("--banks", help="View-bank sizes K also matched at the longest length; each run's fit on its bank "
              "and on the cache's other (fresh) views is reported (default: none).")
@click.option("--jobs", type=int, help="Runs at once (default 1).")
@click.option("--threads", type=int, help="torch threads per run (default 0: cores/jobs).")
@teacher_options
@log_option
def experiment_patient(cache, dataset, runs_dir, tuning_dir, reports_dir, teacher_record, students, lengths, Ts,
                       alphas, seeds, holdout, replay, banks, jobs, threads, combine, teacher_tag, tensorboard_dir):
    """Tune the clean-target arm on held-out rows, then train every arm at every length and seed."""
    student = from_options(StudentConfig, cache=cache, dataset=dataset, out_dir=runs_dir,
                           teacher_record=teacher_record, combine=combine, teacher_tag=teacher_tag,
                           tensorboard_dir=tensorboard_dir)
    grid = lambda name, text, kind: None if text is None else grid_values(name, text, kind)   # noqa: E731
    cfg = from_options(PatientExperimentConfig, student=student, runs_dir=runs_dir, tuning_dir=tuning_dir,
                       reports_dir=reports_dir, students=None if students is None else tuple(students.split()),
                       lengths=grid("LENGTHS", lengths, int), Ts=grid("TS", Ts, float),
                       alphas=grid("ALPHAS", alphas, float), seeds=grid("SEEDS", seeds, int), holdout=holdout,
                       replay=replay, banks=grid("BANKS", banks, int), jobs=jobs, threads=threads)
    with tqdm(desc="experiment-patient", unit="run", file=sys.stderr) as bar:
        run_patient_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(patient_report(reports_dir).read_text(), nl=False)
