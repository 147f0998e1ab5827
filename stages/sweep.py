"""Stage `sweep`: every (student, T, ALPHA, seed) combination from one cache, in parallel."""

import sys
from pathlib import Path

import click
from tqdm.auto import tqdm

from pipeline.config import SWEEP_BACKENDS, StudentConfig, SweepConfig, from_options
from pipeline.errors import UsageError
from pipeline.experiments.sweep import SUMMARY_MD, plan_sweep, run_sweep
from pipeline.settings import DEFAULTS
from stages.options import (
    advance,
    grid_values,
    input_options,
    log_option,
    teacher_options,
)


@click.command("sweep")
@click.option("--cache", type=click.Path(path_type=Path), required=True, help="Teacher-logit cache (.h5).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--runs-dir", type=click.Path(path_type=Path), required=True, help="Where run directories go.")
@click.option("--reports-dir", type=click.Path(path_type=Path), required=True, help="Where sweep.csv/sweep.md go.")
@click.option("--teacher-record", type=click.Path(path_type=Path), help="teacher.json the cache must come from.")
@click.option("--students", default=DEFAULTS["STUDENT"], show_default=True, help="Space-separated student names.")
@click.option("--Ts", "Ts", default=DEFAULTS["T"], show_default=True, help="Space-separated temperatures.")
@click.option("--alphas", default=f"0 {DEFAULTS['ALPHA']}", show_default=True,
              help="Space-separated ALPHA values (0 = scratch).")
@click.option("--seeds", default=DEFAULTS["SEED"], show_default=True, help="Space-separated seeds.")
@click.option("--epochs", type=int, help=f"Epochs of every run (default {DEFAULTS['EPOCHS']}).")
@click.option("--jobs", type=int, default=int(DEFAULTS["JOBS"]), show_default=True, help="Runs at once (joblib backend).")
@click.option("--threads", type=int, default=int(DEFAULTS["THREADS"]), show_default=True,
              help="torch threads per run (0: cores/jobs).")
@click.option("--backend", type=click.Choice(SWEEP_BACKENDS), default=DEFAULTS["SWEEP_BACKEND"], show_default=True)
@click.option("--scheduler", help="Dask scheduler address for --backend dask (tcp://host:8786).")
@input_options
@teacher_options
@log_option
def sweep(runs_dir, reports_dir, students, Ts, alphas, seeds, jobs, threads, backend, scheduler, **run_options):
    """Train a grid of students from one cache; finished runs are skipped, failures reported."""
    alpha_grid = grid_values("ALPHAS", alphas, float)
    # What every run shares (cache, dataset, epochs, inputs, teacher options); each run's own ALPHA
    # replaces the first one's, which is checked here with the rest.
    student = from_options(StudentConfig, out_dir=runs_dir, alpha=alpha_grid[0] if alpha_grid else None,
                           **run_options)
    cfg = SweepConfig(student=student, runs_dir=runs_dir, reports_dir=reports_dir,
                      students=tuple(students.split()), Ts=grid_values("TS", Ts, float),
                      alphas=alpha_grid, seeds=grid_values("SEEDS", seeds, int),
                      jobs=jobs, threads=threads, backend=backend, scheduler=scheduler)
    planned = len(plan_sweep(cfg))
    with tqdm(total=planned, desc="sweep", unit="run", file=sys.stderr) as bar:
        records = run_sweep(cfg, on_result=lambda record: advance(bar, record))
    failed = [r for r in records if r["status"] == "failed"]
    click.echo((reports_dir / SUMMARY_MD).read_text(), nl=False)
    if failed:
        raise UsageError(f"{len(failed)} of {len(records)} runs failed ({', '.join(r['run'] for r in failed)}); "
                         f"the others are kept; errors in {reports_dir / SUMMARY_MD}")
