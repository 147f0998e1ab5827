"""Stage `experiment-lm`: scratch against distilled LM students at equal steps, and the price of sparsity."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import LMExperimentConfig, LMStudentConfig, from_options
from pipeline.experiments.lm import lm_report, run_lm_experiment
from stages.options import advance, config_options, own_options


@click.command("experiment-lm")
@config_options(LMExperimentConfig)
@config_options(LMStudentConfig, only=("cache", "text", "steps", "batch_size", "lr", "eval_every", "eval_windows"))
def experiment_lm(**options):
    """Choose T/ALPHA on validation, then train scratch and distilled students over every seed, and write the report."""
    own = own_options(LMExperimentConfig, options)
    cfg = from_options(LMExperimentConfig, student=from_options(LMStudentConfig, out_dir=own["runs_dir"], **options),
                       **own)
    with tqdm(desc="experiment-lm", unit="run", file=sys.stderr) as bar:
        run_lm_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(lm_report(cfg.reports_dir).read_text(), nl=False)
