"""Sweep throughput: the same 8-run sweep with JOBS=1 and JOBS=2, one after the other in
one process (so the same machine state), and what reading the cache costs each run.

With JOBS=1 one run at a time gets every core; with JOBS=2 two runs share them, one
thread each. How much JOBS=2 can gain is capped by how well one run already uses two
threads: the ceiling is 2 x (epoch time at JOBS=1) / (epoch time at JOBS=2), printed
beside the speedup. Each run also records how long opening,
verifying and loading the cache took (``cache_seconds``); its share of the run's
training time is the cost of reading the cache once per run.

Usage: python benchmarks/sweep_speed.py [--rows N] [--epochs E]
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import torch
from fixtures import dataset, throwaway_cache

from pipeline.config import StudentConfig, SweepConfig
from pipeline.experiments.sweep import run_sweep

GRID = {"Ts": (1.0, 2.0, 4.0, 8.0), "alphas": (0.5,), "seeds": (0, 1)}   # 8 runs per student


def timed_sweep(prepared: Path, cache: Path, workdir: Path, student_name: str, jobs: int,
                epochs: int) -> tuple[float, list[dict]]:
    student = StudentConfig(cache=cache, dataset=prepared, out_dir=workdir, epochs=epochs)
    cfg = SweepConfig(student=student, runs_dir=workdir / "runs", reports_dir=workdir / "reports", jobs=jobs,
                      students=(student_name,), **GRID)
    start = time.perf_counter()
    records = run_sweep(cfg)
    seconds = time.perf_counter() - start
    assert all(r["status"] == "trained" for r in records), [r.get("error") for r in records]
    return seconds, [r["metrics"] for r in records]


@click.command()
@click.option("--rows", default=60000, show_default=True, help="Training images.")
@click.option("--epochs", default=5, show_default=True, help="Epochs per run (the default EPOCHS).")
@click.option("--students", default="mlp cnn-tiny", show_default=True, help="One 8-run sweep per student.")
def main(rows: int, epochs: int, students: str) -> None:
    students = students.split()
    data = dataset(rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared, cache = throwaway_cache(data, tmp)
        results = []
        for name in students:
            one, one_metrics = timed_sweep(prepared, cache, tmp / f"{name}-jobs1", name, 1, epochs)
            two, two_metrics = timed_sweep(prepared, cache, tmp / f"{name}-jobs2", name, 2, epochs)
            results.append((name, one, one_metrics, two, two_metrics))
    cores = os.cpu_count()
    lines = [
        "## Sweeps: JOBS=2 vs JOBS=1, and the cost of reading the cache",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {cores} cores, torch "
        f"{torch.__version__}; data: {data.name}, {rows} training images; per student a sweep of 8 runs "
        f"(T 1/2/4/8 × 2 seeds, ALPHA=0.5), {epochs} epoch(s) each, joblib (loky) backend, JOBS=1 then "
        "JOBS=2 back to back. Command: `make bench` (`python benchmarks/sweep_speed.py`).",
        "",
        f"| student | JOBS=1 wall (s), {cores} threads/run | JOBS=2 wall (s), 1 thread/run | speedup | "
        f"epoch s, JOBS=1 | epoch s, JOBS=2 | ceiling 2·(JOBS=1 epoch)/(JOBS=2 epoch) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, one, one_metrics, two, two_metrics in results:
        e1 = statistics.fmean(m["seconds_per_epoch"] for m in one_metrics)
        e2 = statistics.fmean(m["seconds_per_epoch"] for m in two_metrics)
        lines.append(f"| {name} | {one:.1f} | {two:.1f} | {one / two:.2f} | {e1:.2f} | {e2:.2f} | {2 * e1 / e2:.2f} |")
    every = [m for r in results for m in r[2] + r[4]]
    share = [m["cache_seconds"] / m["train_seconds"] for m in every]
    lines += [
        "",
        "| cache read per run (open + verify + load) | mean s | share of the run's training time |",
        "|---|---:|---:|",
        f"| all {len(every)} runs above | {statistics.fmean(m['cache_seconds'] for m in every):.3f} | "
        f"{100 * statistics.fmean(share):.2f}% (max {100 * max(share):.2f}%) |",
        "",
    ]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
