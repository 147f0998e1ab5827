"""Stage `experiment-views`: scratch vs clean-target KD vs replayed-view KD, tuned on held-out rows."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import StudentConfig, ViewsExperimentConfig, from_options
from pipeline.experiments.views import (
    experiment_report,
    run_count,
    run_views_experiment,
)
from pipeline.settings import DEFAULTS
from stages.options import (
    advance,
    experiment_options,
    grid_values,
    log_option,
    teacher_options,
)


@click.command("experiment-views")
@experiment_options("Cache with views (VIEWS=K).", "views-experiment[-from<teacher tag>].md/.json")
@click.option("--students", help="Space-separated student names (default: STUDENT's default).")
@click.option("--Ts", "Ts", help="Temperatures to choose from (default 1 2 4).")
@click.option("--alphas", help="ALPHA values to choose from, > 0 (default 0.5 0.9).")
@click.option("--seeds", help="Seeds of the final runs (default 0 1 2).")
@click.option("--tune-seeds", help="Seeds of the tuning runs (default 0).")
@click.option("--holdout", type=int, help=f"Training rows held out for tuning (default {DEFAULTS['EXPERIMENT_HOLDOUT']}).")
@click.option("--replay", type=int, help="Views to replay (default 0: all cached).")
@click.option("--epochs", type=int, help=f"Epochs of every run (default {DEFAULTS['EPOCHS']}).")
@click.option("--jobs", type=int, help="Runs at once (default 1).")
@click.option("--threads", type=int, help="torch threads per run (default 0: cores/jobs).")
@teacher_options
@log_option
def experiment_views(cache, dataset, runs_dir, tuning_dir, reports_dir, teacher_record, students, Ts, alphas,
                     seeds, tune_seeds, holdout, epochs, jobs, threads, replay, combine, teacher_tag, tensorboard_dir):
    """Choose T/ALPHA on held-out rows, then train every arm with every seed and write the comparison."""
    student = from_options(StudentConfig, cache=cache, dataset=dataset, out_dir=runs_dir,
                           teacher_record=teacher_record, epochs=epochs, combine=combine, teacher_tag=teacher_tag,
                           tensorboard_dir=tensorboard_dir)
    # Unset options are dropped, so the config's defaults stay the only ones.
    grid = lambda name, text, kind: None if text is None else grid_values(name, text, kind)   # noqa: E731
    cfg = from_options(ViewsExperimentConfig, student=student, runs_dir=runs_dir, tuning_dir=tuning_dir,
                       reports_dir=reports_dir, students=None if students is None else tuple(students.split()),
                       Ts=grid("TS", Ts, float), alphas=grid("ALPHAS", alphas, float),
                       seeds=grid("SEEDS", seeds, int), tune_seeds=grid("TUNE_SEEDS", tune_seeds, int),
                       holdout=holdout, replay=replay, jobs=jobs, threads=threads)
    with tqdm(total=run_count(cfg), desc="experiment-views", unit="run", file=sys.stderr) as bar:
        run_views_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(experiment_report(reports_dir, cfg.student.teacher_tag).read_text(), nl=False)
