"""How often compare's and tune's verdicts are wrong, under a noise model: A/A trials (two runs of
the same thing) give the false-positive rate, trials with a known change the power. The verdicts
are the very functions ``compare`` and ``tune`` call (``results.compare``); only the figures they
judge are drawn here, from ``Noise``: each measurement (a run, or one of tune's rounds) gets a
speed factor of its own (``run_cv``), and each window within it another (``window_cv``), both
lognormal with mean 1. benchmarks/verdicts.py measures the model on a host and runs these."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
from scipy import stats

from visionbench.results.compare import paired_verdict, throughput_stats, verdict
from visionbench.testing.fake_engine import speed_factor


@dataclass(frozen=True)
class Noise:
    """Coefficients of variation: between windows of one measurement, and between measurements
    beyond what their windows' spread explains."""

    window_cv: float
    run_cv: float


@dataclass(frozen=True)
class Tally:
    """Of ``trials``, how many the verdict called different: ``right`` in the true change's
    direction, ``wrong`` in the other (in A/A trials every call is wrong)."""

    trials: int
    right: int
    wrong: int

    @property
    def called(self) -> float:
        return (self.right + self.wrong) / self.trials

    @property
    def power(self) -> float:
        return self.right / self.trials

    def upper95(self, k: int | None = None) -> float:
        """The exact (Clopper-Pearson) 95% upper bound of the rate of ``k`` (default: every call)
        in ``trials``."""
        k = self.right + self.wrong if k is None else k
        return float(stats.binomtest(k, self.trials).proportion_ci(0.95, "exact").high)


def _windows(rng: np.random.Generator, noise: Noise, n: int, speed: float) -> list[float]:
    return list(100.0 * speed * speed_factor(rng, noise.run_cv)
                * speed_factor(rng, noise.window_cv, n))


def _tally(calls: list[str], change: float) -> Tally:
    right = "faster" if change > 0 else "slower"
    called = [c for c in calls if c in ("faster", "slower")]
    hits = sum(c == right for c in called) if change else 0
    return Tally(len(calls), hits, len(called) - hits)


def compare_verdict(base: list[float], other: list[float], run_noise: float | None = None
                    ) -> str:
    """compare's throughput verdict on two runs' window figures (``compare.compare_cell``)."""
    p, _, why = throughput_stats(base, other, run_noise)
    return verdict(p, statistics.median(other) / statistics.median(base), None, why)[0]


def compare_trials(noise: Noise, repeats: int, change: float, trials: int, seed: int = 0,
                   run_noise: float | None = None) -> Tally:
    """Two runs of ``repeats`` windows each, the second ``change`` faster (-0.03: 3% slower),
    judged with ``run_noise`` (compare --run-noise; None: its default)."""
    rng = np.random.default_rng(seed)
    return _tally([compare_verdict(_windows(rng, noise, repeats, 1.0),
                                   _windows(rng, noise, repeats, 1.0 + change), run_noise)
                   for _ in range(trials)], change)


def tune_trials(noise: Noise, rounds: int, change: float, trials: int, seed: int = 0) -> Tally:
    """tune's confirmation: ``rounds`` rounds, each measuring the default and a setting
    ``change`` faster once (one window each, each its own measurement), judged on the per-round
    ratios."""
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(trials):
        ratios = [_windows(rng, noise, 1, 1.0 + change)[0] / _windows(rng, noise, 1, 1.0)[0]
                  for _ in range(rounds)]
        calls.append(paired_verdict(ratios)[1])
    return _tally(calls, change)
