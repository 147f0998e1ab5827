"""Stage `experiment-labels`: scratch on N labels vs distilled on N labels plus soft targets elsewhere."""

import sys
from pathlib import Path

import click
from tqdm.auto import tqdm

from pipeline.config import LabelsExperimentConfig, StudentConfig, from_options
from pipeline.experiments.labels import labels_report, run_labels_experiment
from pipeline.settings import DEFAULTS, LABEL_GRID, check
from stages.options import (
    advance,
    experiment_options,
    grid_values,
    log_option,
    teacher_options,
)


def _label_counts(text: str | None) -> tuple | None:
    """'600 1200 all' -> (600, 1200, None)."""
    if text is None:
        return None
    return tuple(None if v == "all" else v for v in (check("LABELS", t) for t in text.replace(",", " ").split()))


@click.command("experiment-labels")
@experiment_options("Teacher-logit cache (.h5).", "labels-experiment.md/.json/.png")
@click.option("--transfer", type=click.Path(path_type=Path),
              help="TRANSFER: the cache's transfer set of unlabelled images, which distilled runs learn from too.")
@click.option("--students", help="Space-separated student names (default: STUDENT's default).")
@click.option("--labels", help=f"Label counts, 'all' for every row (default {LABEL_GRID}).")
@click.option("--Ts", "Ts", help="Temperatures to choose from (default 1 4).")
@click.option("--alphas", help="ALPHA values to choose from, > 0 (default 0.5).")
@click.option("--seeds", help="Seeds of the final runs (default 0 1 2).")
@click.option("--tune-seeds", help="Seeds of the tuning runs (default 0).")
@click.option("--holdout", type=int,
              help=f"Training rows held out for tuning (default {DEFAULTS['EXPERIMENT_HOLDOUT']}).")
@click.option("--epochs", type=int, help=f"Epochs of the distilled arm (default {DEFAULTS['EPOCHS']}).")
@click.option("--jobs", type=int, help="Runs at once (default 1).")
@click.option("--threads", type=int, help="torch threads per run (default 0: cores/jobs).")
@teacher_options
@log_option
def experiment_labels(cache, dataset, runs_dir, tuning_dir, reports_dir, teacher_record, transfer, students, labels,
                      Ts, alphas, seeds, tune_seeds, holdout, epochs, jobs, threads, combine, teacher_tag,
                      tensorboard_dir):
    """Choose T/ALPHA and scratch's epochs on held-out rows, then train both arms at every label count."""
    student = from_options(StudentConfig, cache=cache, dataset=dataset, out_dir=runs_dir, transfer=transfer,
                           teacher_record=teacher_record, epochs=epochs, combine=combine, teacher_tag=teacher_tag,
                           tensorboard_dir=tensorboard_dir)
    grid = lambda name, text, kind: None if text is None else grid_values(name, text, kind)   # noqa: E731
    cfg = from_options(LabelsExperimentConfig, student=student, runs_dir=runs_dir, tuning_dir=tuning_dir,
                       reports_dir=reports_dir, students=None if students is None else tuple(students.split()),
                       label_counts=_label_counts(labels), Ts=grid("TS", Ts, float),
                       alphas=grid("ALPHAS", alphas, float), seeds=grid("SEEDS", seeds, int),
                       tune_seeds=grid("TUNE_SEEDS", tune_seeds, int), holdout=holdout, jobs=jobs, threads=threads)
    with tqdm(desc="experiment-labels", unit="run", file=sys.stderr) as bar:
        run_labels_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(labels_report(reports_dir).read_text(), nl=False)
