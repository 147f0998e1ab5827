"""Stage `experiment-labels`: scratch on N labels vs distilled on N labels plus soft targets elsewhere."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import LabelsExperimentConfig, StudentConfig
from pipeline.experiments.labels import labels_report, run_labels_experiment
from pipeline.settings import check
from stages.options import SHARED, advance, config_options, experiment_config, setting_option


def _label_counts(ctx, param, text: str | None) -> tuple | None:
    """'600 1200 all' -> (600, 1200, None)."""
    if text is None:
        return None
    return tuple(None if v == "all" else v for v in (check("LABELS", t) for t in text.replace(",", " ").split()))


@click.command("experiment-labels")
@config_options(LabelsExperimentConfig,
                override={"label_counts": setting_option("LABELS", "--labels", "label_counts", callback=_label_counts)})
@config_options(StudentConfig, only=(*SHARED, "transfer", "epochs"))
def experiment_labels(**options):
    """Choose T/ALPHA and scratch's epochs on held-out rows, then train both arms at every label count."""
    cfg = experiment_config(LabelsExperimentConfig, options)
    with tqdm(desc="experiment-labels", unit="run", file=sys.stderr) as bar:
        run_labels_experiment(cfg, on_result=lambda record: advance(bar, record))
    click.echo(labels_report(cfg.reports_dir).read_text(), nl=False)
