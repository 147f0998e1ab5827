"""Stage `experiment-views`: scratch vs clean-target KD vs replayed-view KD, tuned on held-out rows."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import StudentConfig, ViewsExperimentConfig
from pipeline.experiments.views import experiment_report, run_count, run_views_experiment
from stages.options import SHARED, advance, config_options, experiment_config


@click.command("experiment-views")
@config_options(ViewsExperimentConfig)
@config_options(StudentConfig, only=(*SHARED, "epochs"))
def experiment_views(**options):
    """Choose T/ALPHA on held-out rows, then train every arm with every seed and write the comparison."""
    cfg = experiment_config(ViewsExperimentConfig, options)
    with tqdm(total=run_count(cfg), desc="experiment-views", unit="run", file=sys.stderr) as bar:
        run_views_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(experiment_report(cfg.reports_dir, cfg.student.teacher_tag).read_text(), nl=False)
