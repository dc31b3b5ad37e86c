"""Statistics of a measurement: latency percentiles from raw samples, the spread of repeats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Coefficient of variation of repeats above which a measurement is flagged as unstable.
CV_WARN = 0.05
#: p99.9 needs enough samples to mean anything.
P999_MIN_SAMPLES = 1000


@dataclass(frozen=True)
class LatencySummary:
    """Per-inference latency statistics in milliseconds; p99.9 only from 1000 samples on."""

    count: int
    mean_ms: float
    stdev_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float | None
    max_ms: float


def latency_summary(latencies_ns: np.ndarray) -> LatencySummary:
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    p999 = float(np.percentile(ms, 99.9)) if len(ms) >= P999_MIN_SAMPLES else None
    return LatencySummary(
        count=len(ms),
        mean_ms=float(ms.mean()),
        stdev_ms=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        p999_ms=p999,
        max_ms=float(ms.max()),
    )


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (sample stdev / mean); None with fewer than two values."""
    if len(values) < 2:
        return None
    a = np.asarray(values, dtype=np.float64)
    return float(a.std(ddof=1) / a.mean())
