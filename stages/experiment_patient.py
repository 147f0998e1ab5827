"""Stage `experiment-patient`: scratch vs clean-target KD vs function matching at every schedule length."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import PatientExperimentConfig
from pipeline.experiments.patient import patient_report, run_patient_experiment
from pipeline.settings import DEFAULTS
from stages.options import advance, experiment_config, experiment_options, grid_values


@click.command("experiment-patient")
@experiment_options(PatientExperimentConfig, "Cache with a mixup view bank.", "patient-experiment.md/.json/.png")
@click.option("--lengths", callback=lambda ctx, param, text: None if text is None else grid_values("LENGTHS", text, int),
              help=f"Schedule lengths in epochs (default {DEFAULTS['LENGTHS']}).")
@click.option("--replay", type=int, help="Views function matching replays (default 0: all cached, or the "
              "largest of --banks).")
@click.option("--banks", callback=lambda ctx, param, text: None if text is None else grid_values("BANKS", text, int),
              help="View-bank sizes K also matched at the longest length; each run's fit on its bank "
              "and on the cache's other (fresh) views is reported (default: none).")
def experiment_patient(**options):
    """Tune the clean-target arm on held-out rows, then train every arm at every length and seed."""
    cfg = experiment_config(PatientExperimentConfig, options)
    with tqdm(desc="experiment-patient", unit="run", file=sys.stderr) as bar:
        run_patient_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(patient_report(cfg.reports_dir).read_text(), nl=False)
