"""Stage `experiment-views`: scratch vs clean-target KD vs replayed-view KD, tuned on held-out rows."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import ViewsExperimentConfig
from pipeline.experiments.views import experiment_report, run_count, run_views_experiment
from stages.options import advance, experiment_config, experiment_options, setting_option


@click.command("experiment-views")
@experiment_options(ViewsExperimentConfig, "Cache with views (VIEWS=K).",
                    "views-experiment[-from<teacher tag>].md/.json")
@setting_option("REPLAY")
@setting_option("EPOCHS")
def experiment_views(epochs, **options):
    """Choose T/ALPHA on held-out rows, then train every arm with every seed and write the comparison."""
    cfg = experiment_config(ViewsExperimentConfig, options, epochs=epochs)
    with tqdm(total=run_count(cfg), desc="experiment-views", unit="run", file=sys.stderr) as bar:
        run_views_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(experiment_report(cfg.reports_dir, cfg.student.teacher_tag).read_text(), nl=False)
