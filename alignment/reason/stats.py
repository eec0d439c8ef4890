"""Uncertainty and spread: Wilson intervals for accuracies (scipy), and mean/range over prompt variants."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from scipy.stats import binomtest

CONFIDENCE = 0.95


def accuracy_with_ci(
    correct: int, total: int, confidence: float = CONFIDENCE
) -> dict[str, float | int | None]:
    """{correct, n, accuracy, ci_low, ci_high}: the Wilson score interval (Wilson 1927) from scipy.

    Wilson rather than the normal approximation because accuracies here sit near 0 or 1 on a few hundred
    items, where the normal interval leaves [0, 1]. With no items every value but n is None.
    """
    if total == 0:
        return {"correct": 0, "n": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return {
        "correct": correct,
        "n": total,
        "accuracy": correct / total,
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
    }


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """{mean, min, max, range, std, count} of accuracies over prompt variants (std 0 for one value)."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "range": max(values) - min(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "count": len(values),
    }
