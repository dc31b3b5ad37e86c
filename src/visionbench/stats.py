"""Statistics of a measurement: latency percentiles from raw samples, the spread of repeats, and
95% confidence intervals: of the windows' mean throughput (Student's t), and of each latency
percentile (the order statistics that bound it, as MLPerf LoadGen's early stopping bounds its
tail, widened to the spread of the percentile between windows where that is wider: samples of
one window are not independent of each other)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: The confidence of every interval.
CONFIDENCE = 0.95

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
    #: 95% confidence intervals of the percentiles, in ms (None in files written before 0.4).
    p50_ci: tuple[float, float] | None = None
    p90_ci: tuple[float, float] | None = None
    p99_ci: tuple[float, float] | None = None
    p999_ci: tuple[float, float] | None = None


def t_interval(values: list[float] | np.ndarray, at_least: float | None = None
               ) -> tuple[float, float] | None:
    """The 95% confidence interval of the mean of ``values`` (Student's t); None under two.
    ``at_least``: the quantity's own floor (a throughput or a latency is never below 0), where
    few, spread values would put the interval's lower end under it."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    lo = float(a.mean() - half)
    return (lo if at_least is None else max(lo, at_least)), float(a.mean() + half)


def relative_halfwidth(values: list[float] | np.ndarray) -> float | None:
    """The half-width of ``t_interval`` as a share of the mean."""
    ci = t_interval(values)
    if ci is None:
        return None
    mean = (ci[0] + ci[1]) / 2
    return (ci[1] - ci[0]) / 2 / mean if mean else None


def quantile_interval(sorted_ms: np.ndarray, q: float) -> tuple[float, float]:
    """Distribution-free 95% bounds of the ``q`` quantile: the order statistics whose ranks a
    binomial count of samples below the quantile falls between with 95% probability."""
    n = len(sorted_ms)
    lo = int(stats.binom.ppf((1 - CONFIDENCE) / 2, n, q))
    hi = int(stats.binom.ppf(0.5 + CONFIDENCE / 2, n, q)) + 1
    return float(sorted_ms[min(max(lo - 1, 0), n - 1)]), float(sorted_ms[min(max(hi - 1, 0), n - 1)])


def _interval(sorted_ms: np.ndarray, q: float, windows: list[np.ndarray]) -> tuple[float, float]:
    lo, hi = quantile_interval(sorted_ms, q)
    # Between windows: each window's own percentile, where each has the samples to give one.
    per = [float(np.percentile(w, q * 100)) for w in windows if len(w) * (1 - q) >= 1]
    if len(per) >= 2 and (t := t_interval(per, at_least=0.0)) is not None:
        lo, hi = min(lo, t[0]), max(hi, t[1])
    return lo, hi


def latency_summary(latencies_ns: np.ndarray, windows: list[np.ndarray] | None = None
                    ) -> LatencySummary:
    """The percentiles of ``latencies_ns`` with their intervals (``windows``: the same samples
    per timed window, for the spread between windows)."""
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    per = [np.asarray(w, dtype=np.float64) / 1e6 for w in windows or []]
    ordered = np.sort(ms)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    enough = len(ms) >= P999_MIN_SAMPLES
    p999 = float(np.percentile(ms, 99.9)) if enough else None
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
        p50_ci=_interval(ordered, 0.5, per),
        p90_ci=_interval(ordered, 0.9, per),
        p99_ci=_interval(ordered, 0.99, per),
        p999_ci=_interval(ordered, 0.999, per) if enough else None,
    )


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (sample stdev / mean); None with fewer than two values."""
    if len(values) < 2:
        return None
    a = np.asarray(values, dtype=np.float64)
    return float(a.std(ddof=1) / a.mean())
