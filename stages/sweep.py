"""Stage `sweep`: every (student, T, ALPHA, seed) combination from one cache, in parallel."""

from pathlib import Path

import click

from pipeline.config import SWEEP_BACKENDS, StudentConfig, SweepConfig, from_options
from pipeline.errors import UsageError
from pipeline.sweep import SUMMARY_MD, run_sweep
from stages.student import input_options, teacher_options


def grid_values(name: str, text: str, kind) -> tuple:
    """'1 2 4' or '1,2,4' -> typed tuple; a value that does not parse is named in the error."""
    out = []
    for token in text.replace(",", " ").split():
        try:
            out.append(kind(token))
        except ValueError:
            raise UsageError(f"{name}: {token!r} is not {'a number' if kind is float else 'an integer'}") from None
    return tuple(out)


@click.command("sweep")
@click.option("--cache", type=click.Path(path_type=Path), required=True, help="Teacher-logit cache (.h5).")
@click.option("--dataset", type=click.Path(path_type=Path), required=True, help="Prepared dataset (.npz).")
@click.option("--runs-dir", type=click.Path(path_type=Path), required=True, help="Where run directories go.")
@click.option("--reports-dir", type=click.Path(path_type=Path), required=True, help="Where sweep.csv/sweep.md go.")
@click.option("--teacher-record", type=click.Path(path_type=Path), help="teacher.json the cache must come from.")
@click.option("--students", default="cnn-tiny", show_default=True, help="Space-separated student names.")
@click.option("--Ts", "Ts", default="4", show_default=True, help="Space-separated temperatures.")
@click.option("--alphas", default="0 0.9", show_default=True, help="Space-separated ALPHA values (0 = scratch).")
@click.option("--seeds", default="0", show_default=True, help="Space-separated seeds.")
@click.option("--epochs", type=int, help="Epochs of every run (default 5).")
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs at once (joblib backend).")
@click.option("--threads", type=int, default=0, show_default=True, help="torch threads per run (0: cores/jobs).")
@click.option("--backend", type=click.Choice(SWEEP_BACKENDS), default="joblib", show_default=True)
@click.option("--scheduler", help="Dask scheduler address for --backend dask (tcp://host:8786).")
@input_options
@teacher_options
def sweep(cache, dataset, runs_dir, reports_dir, teacher_record, students, Ts, alphas, seeds, epochs, jobs,
          threads, backend, scheduler, augment, replay, holdout, combine, teacher_tag):
    """Train a grid of students from one cache; finished runs are skipped, failures reported."""
    student = from_options(StudentConfig, cache=cache, dataset=dataset, out_dir=runs_dir,
                           teacher_record=teacher_record, epochs=epochs, augment=augment, replay=replay,
                           holdout=holdout, combine=combine, teacher_tag=teacher_tag)
    cfg = SweepConfig(student=student, runs_dir=runs_dir, reports_dir=reports_dir,
                      students=tuple(students.split()), Ts=grid_values("TS", Ts, float),
                      alphas=grid_values("ALPHAS", alphas, float), seeds=grid_values("SEEDS", seeds, int),
                      jobs=jobs, threads=threads, backend=backend, scheduler=scheduler)
    planned = len(cfg.runs())
    with click.progressbar(length=planned, label=f"sweep: {planned} runs", show_pos=True) as bar:
        records = run_sweep(cfg, on_result=lambda record: bar.update(1))
    failed = [r for r in records if r["status"] == "failed"]
    click.echo((reports_dir / SUMMARY_MD).read_text(), nl=False)
    if failed:
        raise UsageError(f"{len(failed)} of {len(records)} runs failed ({', '.join(r['run'] for r in failed)}); "
                         f"the others are kept; errors in {reports_dir / SUMMARY_MD}")
