"""Stage `sweep`: every (student, T, ALPHA, seed) combination from one cache, in parallel."""

import sys

import click
from tqdm.auto import tqdm

from pipeline.config import StudentConfig, SweepConfig, from_options
from pipeline.errors import UsageError
from pipeline.experiments.sweep import SUMMARY_MD, plan_sweep, run_sweep
from pipeline.settings import check
from stages.options import (advance, cache_option, dataset_option, grid_option, input_options, log_option,
                            path_option, setting_option, teacher_options)


@click.command("sweep")
@cache_option
@dataset_option
@path_option("--runs-dir", "Where run directories go.")
@path_option("--reports-dir", "Where sweep.csv/sweep.md go.")
@path_option("--teacher-record", "teacher.json the cache must come from.", required=False)
@setting_option("STUDENTS", callback=lambda ctx, param, text: None if text is None
                else tuple(check("STUDENTS", text).replace(",", " ").split()))
@grid_option("--Ts", "TS", float, None, "Ts")
@grid_option("--alphas", "ALPHAS", float)
@grid_option("--seeds", "SEEDS", int)
@setting_option("EPOCHS")
@setting_option("JOBS")
@setting_option("THREADS")
@setting_option("SWEEP_BACKEND", "--backend", "backend")
@setting_option("SCHEDULER")
@input_options
@teacher_options
@log_option
def sweep(runs_dir, reports_dir, students, Ts, alphas, seeds, jobs, threads, backend, scheduler, **run_options):
    """Train a grid of students from one cache; finished runs are skipped, failures reported."""
    # What every run shares (cache, dataset, epochs, inputs, teacher options); each run's own ALPHA
    # replaces the first one's, which is checked here with the rest.
    student = from_options(StudentConfig, out_dir=runs_dir, alpha=alphas[0] if alphas else None, **run_options)
    cfg = from_options(SweepConfig, student=student, runs_dir=runs_dir, reports_dir=reports_dir, students=students,
                       Ts=Ts, alphas=alphas, seeds=seeds, jobs=jobs, threads=threads, backend=backend,
                       scheduler=scheduler or None)
    with tqdm(total=len(plan_sweep(cfg)), desc="sweep", unit="run", file=sys.stderr) as bar:
        records = run_sweep(cfg, on_result=lambda record: advance(bar, record))
    failed = [r for r in records if r["status"] == "failed"]
    click.echo((reports_dir / SUMMARY_MD).read_text(), nl=False)
    if failed:
        raise UsageError(f"{len(failed)} of {len(records)} runs failed ({', '.join(r['run'] for r in failed)}); "
                         f"the others are kept; errors in {reports_dir / SUMMARY_MD}")
