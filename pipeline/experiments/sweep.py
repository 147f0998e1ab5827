"""Sweeps: many student runs from one cache, in parallel, on one machine or a Dask cluster.

The teacher is never loaded: every run reads the cache and the images only. Each run is
written to its own ``runs/<name>/`` by :func:`pipeline.student.distill.train_student`, exactly as
``make student`` writes it, so a sweep and single runs mix freely in the report, and a
run already finished from the same cache is skipped (an interrupted sweep resumes).
joblib drives the runs; its backend mechanism moves them onto a Dask distributed
cluster unchanged. A run that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import joblib

from pipeline.cache.reader import LogitCache
from pipeline.config import StudentConfig, SweepConfig, as_record
from pipeline.errors import UsageError
from pipeline.files import atomic_path, read_json
from pipeline.results.report import render_markdown, summarize
from pipeline.settings import capped_parallelism, threads_per_run
from pipeline.student.distill import train_student
from pipeline.training.run_dir import METRICS_FILE

__all__ = ["plan_sweep", "run_sweep", "run_planned", "SUMMARY_CSV", "SUMMARY_MD"]

SUMMARY_CSV, SUMMARY_MD = "sweep.csv", "sweep.md"
_CSV_FIELDS = ("run", "status", "student", "T", "alpha", "inputs", "seed", "epochs", "test_acc", "val_acc", "ece",
               "agreement_with_teacher", "seconds_per_epoch", "cache_seconds", "train_seconds", "error")


_WATCH = "softcache: end with the sweep"


def die_with(sweep_pid: int) -> None:
    """Make this worker end when the sweep that started it is gone (killed with -9: it cannot tell its workers,
    and joblib's workers would otherwise finish their run, holding its lock, so the rerun finds it busy). A
    thread checks every half second whether the worker's parent is still the sweep; the lock and every other
    file goes with the process, and the run's saved state lets the rerun resume it. Workers on another
    machine (Dask) or the sweep's own process (JOBS=1) have another parent: nothing to watch."""
    if os.getppid() != sweep_pid or any(t.name == _WATCH for t in threading.enumerate()):
        return

    def watch():
        while os.getppid() == sweep_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=_WATCH, daemon=True).start()


def _train_one(cfg, sweep_pid: int = 0, train: Callable = train_student) -> dict:
    """One run in a worker; any failure comes back as a record so the other runs go on."""
    die_with(sweep_pid)
    try:
        return {"run": cfg.out_dir.name, "status": "trained", "metrics": train(cfg, progress=False)}
    except UsageError as exc:
        return {"run": cfg.out_dir.name, "status": "failed", "error": str(exc)}
    except Exception as exc:  # a bug in one run must not take the sweep down; keep where it happened
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"run": cfg.out_dir.name, "status": "failed",
                "error": f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"}


def _finished(cfg, cache_fingerprint: str) -> dict | None:
    """metrics.json of a run already trained from this very cache, else None."""
    path = cfg.out_dir / METRICS_FILE
    try:
        metrics = read_json(path)
    except (OSError, UsageError):     # none yet, or not a record softcache wrote: train the run
        return None
    if not hasattr(cfg, "cache"):     # a run that reads no cache (self-distillation): trained from this very recipe
        return metrics if _recipe(metrics.get("config", {})) == _recipe(as_record(cfg)) else None
    return metrics if metrics.get("cache_fingerprint") == cache_fingerprint else None


def _recipe(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("out_dir", "threads", "tensorboard_dir")}


def _dask_client(address: str):
    try:
        from dask.distributed import Client
    except ImportError:
        raise UsageError("SWEEP_BACKEND=dask needs Dask distributed: pip install 'softcache[cluster]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the dask scheduler at {address} ({exc}); start one "
                         f"('dask scheduler' and 'dask worker {address}') or fix SCHEDULER") from None


def plan_sweep(cfg: SweepConfig) -> list[StudentConfig]:
    """One StudentConfig per run of the grid, in grid order. Runs with ALPHA=0 do not depend on T
    (plain cross-entropy), so they are planned once per student and seed."""
    threads = threads_per_run(cfg.threads, cfg.jobs)
    planned: dict[str, StudentConfig] = {}
    for student in cfg.students:
        for seed in cfg.seeds:
            for alpha in cfg.alphas:
                for T in (cfg.Ts if alpha != 0 else cfg.Ts[:1]):
                    run = dataclasses.replace(cfg.student, student=student, T=float(T), alpha=float(alpha),
                                              seed=seed, threads=threads)
                    planned[run.run_name] = dataclasses.replace(run, out_dir=cfg.runs_dir / run.run_name)
    return list(planned.values())


def run_sweep(cfg: SweepConfig, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Train every planned run not yet finished; write sweep.csv and sweep.md; return one record per run."""
    return run_planned(plan_sweep(cfg), cfg.reports_dir, jobs=cfg.jobs, backend=cfg.backend, scheduler=cfg.scheduler,
                       on_result=on_result)


def run_planned(planned: list, reports_dir: Path, *, jobs: int = 1, backend: str = "joblib",
                scheduler: str | None = None, on_result: Callable[[dict], None] | None = None,
                cache_fingerprint: str | None = None, train: Callable = train_student, summary: bool = True) -> list[dict]:
    """:func:`run_sweep` for any list of runs from one cache (an experiment plans its own).
    A caller that has already opened (so verified) the cache passes its fingerprint; ``train`` trains one
    run's config (image students by default; ``pipeline.student.lm_distill.train_lm_student`` for text), and
    ``summary`` writes the image runs' sweep.csv and sweep.md."""
    # verified once, before any run starts
    fingerprint = cache_fingerprint or LogitCache(planned[0].cache).fingerprint
    records: dict[str, dict] = {}
    todo = []
    for run in planned:
        metrics = _finished(run, fingerprint)
        if metrics is None:
            todo.append(run)
        else:
            records[run.out_dir.name] = {"run": run.out_dir.name, "status": "skipped", "metrics": metrics}
            if on_result is not None:
                on_result(records[run.out_dir.name])

    if todo:
        n_jobs, jobs = jobs, (joblib.delayed(_train_one)(run, os.getpid(), train) for run in todo)
        if backend == "dask":   # the cluster decides how many run at once
            with _dask_client(scheduler), joblib.parallel_config(backend="dask"):
                results = _collect(joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(jobs), on_result)
        else:   # this machine: never more runs at once than cores (each run's threads are capped by plan_sweep)
            capped = capped_parallelism(n_jobs, 0)[0]
            if capped != n_jobs:
                print(f"note: JOBS={n_jobs} exceeds this machine's cores; running {capped} at once", file=sys.stderr)
                n_jobs = capped
            results = _collect(joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs), on_result)
        records.update({r["run"]: r for r in results})

    ordered = [records[run.out_dir.name] for run in planned]
    if summary:
        _write_summary(reports_dir, ordered)
    return ordered


def _collect(results, on_result) -> list[dict]:
    collected = []
    for record in results:
        collected.append(record)
        if on_result is not None:
            on_result(record)
    return collected


def _write_summary(reports_dir: Path, records: list[dict]) -> None:
    rows = []
    for r in records:
        m = r.get("metrics", {})
        rows.append({"run": r["run"], "status": r["status"], "error": r.get("error", ""),
                     **{k: m.get(k, "") for k in _CSV_FIELDS if k not in ("run", "status", "error")}})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(reports_dir / SUMMARY_CSV) as tmp:
        tmp.write_text(buffer.getvalue())

    done = [dict(r["metrics"], run=r["run"]) for r in records if "metrics" in r]
    failed = [r for r in records if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in records) for s in ("trained", "skipped", "failed")}
    text = ["# softcache sweep", "",
            f"{len(records)} runs: {counts['trained']} trained, {counts['skipped']} already finished "
            f"(skipped), {counts['failed']} failed. Per-run figures: `{SUMMARY_CSV}`.", "",
            render_markdown(summarize(done))]
    if failed:
        text += ["## Failed runs", "", "| run | error |", "|---|---|",
                 *[f"| {r['run']} | {r['error'].replace('|', '/')} |" for r in failed], ""]
    with atomic_path(reports_dir / SUMMARY_MD) as tmp:
        tmp.write_text("\n".join(text))
