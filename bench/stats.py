"""Summaries of repeated measurements: median with min and max, and percentiles."""

from __future__ import annotations

import statistics


def stats(values: list[float]) -> dict[str, float]:
    """Median, min, max and count: how every repeated measurement is quoted."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def quantile(values: list[float], q: int) -> float:
    """The q-th percentile, interpolated (statistics.quantiles, inclusive); one value is its own."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values already sorted; nan when there are none."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values))) - 1))
    return sorted_values[k]
