"""Stage `sweep`: every (student, T, ALPHA, seed) combination from one cache, in parallel."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import StudentConfig, SweepConfig, from_options
from pipeline.errors import UsageError
from pipeline.experiments.sweep import SUMMARY_MD, plan_sweep, run_sweep
from stages.options import advance, config_options, labels_option, own_options


@click.command("sweep")
@config_options(SweepConfig)
@config_options(StudentConfig, skip=("out_dir", "student", "T", "alpha", "seed", "threads"),
                override={"labels": labels_option})
def sweep(**options):
    """Train a grid of students from one cache; finished runs are skipped, failures reported."""
    # What every run shares (cache, dataset, epochs, inputs, teacher options); each run's own ALPHA
    # replaces the first one's, which is checked here with the rest.
    own = own_options(SweepConfig, options)
    alphas, reports_dir = own["alphas"], own["reports_dir"]
    student = from_options(StudentConfig, out_dir=own["runs_dir"], alpha=alphas[0] if alphas else None, **options)
    cfg = from_options(SweepConfig, student=student, **own)
    with tqdm(total=len(plan_sweep(cfg)), desc="sweep", unit="run", file=sys.stderr) as bar:
        records = run_sweep(cfg, on_result=lambda record: advance(bar, record))
    failed = [r for r in records if r["status"] == "failed"]
    click.echo((reports_dir / SUMMARY_MD).read_text(), nl=False)
    if failed:
        raise UsageError(f"{len(failed)} of {len(records)} runs failed ({', '.join(r['run'] for r in failed)}); "
                         f"the others are kept; errors in {reports_dir / SUMMARY_MD}")
