"""Latency percentiles (nearest rank) of one measured cell, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "mean": self.mean,
            "max": self.max,
        }


def nearest_rank(sorted_values: Sequence[int], percentile: float) -> int:
    """The smallest value with at least ``percentile`` % of the values at or below it."""
    rank = max(1, math.ceil(percentile / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_ns(latencies_ns: Sequence[int]) -> LatencySummary:
    """Percentiles, mean and max of latencies given in nanoseconds, reported in milliseconds."""
    if not latencies_ns:
        return LatencySummary(0.0, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(latencies_ns)

    def ms(ns: float) -> float:
        return round(ns / 1e6, 3)

    p50, p95, p99 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return LatencySummary(
        p50=ms(p50),
        p95=ms(p95),
        p99=ms(p99),
        mean=ms(sum(ordered) / len(ordered)),
        max=ms(ordered[-1]),
    )
