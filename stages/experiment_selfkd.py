"""Stage `experiment-selfkd`: scratch vs PS-KD vs BYOT vs CS-KD vs the cached teacher, full and few labels."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import SelfKDExperimentConfig, StudentConfig
from pipeline.experiments.selfkd import run_selfkd_experiment, selfkd_report
from stages.options import SHARED, advance, config_options, experiment_config


@click.command("experiment-selfkd")
@config_options(SelfKDExperimentConfig)
@config_options(StudentConfig, only=(*SHARED, "epochs"))
def experiment_selfkd(**options):
    """Choose each method's setting on held-out rows, then train every arm with every seed."""
    cfg = experiment_config(SelfKDExperimentConfig, options)
    with tqdm(desc="experiment-selfkd", unit="run", file=sys.stderr) as bar:
        run_selfkd_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(selfkd_report(cfg.reports_dir).read_text(), nl=False)
