"""What the reports share about finished runs: a record checked against what softcache writes, and a
figure over seeds as mean and sample standard deviation."""

from __future__ import annotations

import statistics
from pathlib import Path

from pipeline.errors import UsageError

__all__ = ["mean_std", "check_record"]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def check_record(path: Path, record: dict, fields: dict[str, type], what: str) -> dict:
    """``record`` (read from ``path``) when every field has its type; else one line naming the field (a
    foreign file in DATA_DIR/runs would otherwise fail a report with a traceback, or be counted as a run)."""
    for key, kind in fields.items():
        value = record.get(key)
        if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            raise UsageError(f"{path} is not the record of {what} softcache finished ({key!r} is {value!r}); "
                             f"move that run folder out of {Path(path).parent.parent}")
    return record
