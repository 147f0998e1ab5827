"""How every table reports a figure over seeds: mean and sample standard deviation."""

from __future__ import annotations

import statistics

__all__ = ["mean_std"]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
