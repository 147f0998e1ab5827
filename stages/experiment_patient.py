"""Stage `experiment-patient`: scratch vs clean-target KD vs function matching at every schedule length."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import PatientExperimentConfig, StudentConfig
from pipeline.experiments.patient import patient_report, run_patient_experiment
from stages.options import SHARED, advance, config_options, experiment_config


@click.command("experiment-patient")
@config_options(PatientExperimentConfig)
@config_options(StudentConfig, only=SHARED)
def experiment_patient(**options):
    """Tune the clean-target arm on held-out rows, then train every arm at every length and seed."""
    cfg = experiment_config(PatientExperimentConfig, options)
    with tqdm(desc="experiment-patient", unit="run", file=sys.stderr) as bar:
        run_patient_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(patient_report(cfg.reports_dir).read_text(), nl=False)
