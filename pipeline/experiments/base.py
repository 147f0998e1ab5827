"""What every experiment shares: its runs go through the sweep's runner (JOBS at a time, finished runs
from the same cache kept, so a killed experiment resumes), its choices are made on held-out scores, and its
write-up names the teacher the same way.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.cache.reader import LogitCache
from pipeline.config import StudentConfig
from pipeline.errors import UsageError
from pipeline.experiments.sweep import run_planned

__all__ = ["run_all", "mean_held_out", "best_per_group", "teacher_line"]


def run_all(planned: list[StudentConfig], reports_dir: Path, jobs: int, cache: LogitCache, on_result,
            **runner) -> list[dict]:
    """Every planned run (JOBS at a time, finished ones from this cache kept), or one line naming a failure.
    ``runner``: how :func:`run_planned` trains them (``train``, ``summary``; a TokenCache for LM students)."""
    records = run_planned(planned, reports_dir, jobs=jobs, on_result=on_result,
                          cache_fingerprint=cache.fingerprint, **runner)
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        raise UsageError(f"{len(failed)} experiment runs failed ({failed[0]['run']}: {failed[0]['error']}); "
                         f"fix it and run the same command again (finished runs are kept)")
    return [r["metrics"] for r in records]


def mean_held_out(tuning: list[dict], fields: tuple[str, ...]) -> dict[tuple, float]:
    """Mean held-out accuracy (``val_acc``) over tuning seeds per combination of ``fields``, in run order."""
    values: dict[tuple, list[float]] = defaultdict(list)
    for m in tuning:
        values[tuple(m[f] for f in fields)].append(m["val_acc"])
    return {key: statistics.fmean(v) for key, v in values.items()}


def best_per_group(scores: dict[tuple, float], fields: tuple[str, ...], group: tuple[str, ...]) -> dict:
    """For each value of the ``group`` fields (a tuple, or the value itself for one field): the other fields
    of its best score in ``scores`` (from :func:`mean_held_out` over ``fields``), with that score as val_acc.
    The first of equal scores wins."""
    best: dict = {}
    for key, val in scores.items():
        named = dict(zip(fields, key))
        at = tuple(named[f] for f in group)
        at = at[0] if len(at) == 1 else at
        if at not in best or val > best[at]["val_acc"]:
            best[at] = {**{f: v for f, v in named.items() if f not in group}, "val_acc": val}
    return best


def teacher_line(cache: LogitCache) -> str:
    """Who the teacher is: one model, or an ensemble with each member's accuracy; published or made here."""
    acc = f"{100 * cache.teacher_accuracy('test'):.2f}%"
    if cache.members:
        each = ", ".join(f"{100 * a:.2f}%" for a in cache.attrs["member_test_acc"])
        what = f"ensemble of {cache.members} ({cache.combine} combined; members {each}): {acc}"
    else:
        what = f"{cache.attrs.get('teacher')}: {acc}"
    return f"Teacher {what}" + (" (published cache)" if cache.attrs.get("published") else "") + "."
