"""compare's and tune's verdicts against a noise model: how often they call a difference that is
not there (A/A), and whether they find one that is. The verdicts are compare's own functions;
only the figures are drawn (visionbench.testing.verdicts). benchmarks/verdicts.py runs the same
on a host's measured model and end to end on the fake engine (docs/method.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visionbench.results.compare import paired_verdict, throughput_stats
from visionbench.scenarios.search import MAX_ROUNDS
from visionbench.settings import FULL
from visionbench.testing.verdicts import Noise, Tally, compare_trials, tune_trials

#: The shared 2-core VM's noise, measured by ``benchmarks/verdicts.py measure --runs 10``: the
#: default study's OpenVINO FP32 throughput (ResNet-50, 3 windows of 10 s a run), and the tiny
#: ResNet-50 on ONNX Runtime, whose small fast batches the host moves in two speed modes.
RESNET50 = Noise(window_cv=0.0083, run_cv=0.0060)
HOST = Noise(window_cv=0.137, run_cv=0.113)
#: A quiet machine: windows agree to 2% and runs do not move beyond them.
QUIET = Noise(window_cv=0.02, run_cv=0.0)
REPEATS = FULL["throughput"].repeats


@pytest.mark.parametrize("noise", [RESNET50, HOST, QUIET], ids=["resnet50", "tiny", "quiet"])
def test_compare_rarely_calls_a_difference_that_is_not_there(noise):
    aa = compare_trials(noise, REPEATS, 0.0, 200, seed=1)
    assert aa.upper95() <= 0.05, aa


def test_compare_without_the_run_noise_is_fooled_by_a_host_that_moves_whole_runs():
    """The reason for the run term: the windows alone miss how far a run's level moves."""
    fooled = compare_trials(HOST, REPEATS, 0.0, 200, seed=1, run_noise=0.0)
    assert fooled.called > 0.05, fooled  # 7 times the test's own 1%
    assert compare_trials(HOST, REPEATS, 0.0, 200, seed=1, run_noise=0.113).upper95() <= 0.05


def test_compare_finds_what_the_host_lets_it_find():
    assert compare_trials(RESNET50, REPEATS, -0.2, 200, seed=3).power >= 0.9
    assert compare_trials(RESNET50, REPEATS, 0.25, 200, seed=3).power >= 0.9
    assert compare_trials(RESNET50, REPEATS, -0.05, 200, seed=3, run_noise=0.006).power >= 0.9
    assert compare_trials(QUIET, REPEATS, -0.15, 200, seed=3, run_noise=0.0).power >= 0.9


@pytest.mark.parametrize("noise", [RESNET50, HOST, QUIET], ids=["resnet50", "tiny", "quiet"])
def test_tune_rarely_calls_a_difference_that_is_not_there(noise):
    assert tune_trials(noise, MAX_ROUNDS, 0.0, 200, seed=1).upper95() <= 0.05


def test_tune_finds_what_the_host_lets_it_find():
    assert tune_trials(HOST, MAX_ROUNDS, -0.5, 200, seed=3).power >= 0.9
    assert tune_trials(RESNET50, MAX_ROUNDS, -0.05, 200, seed=3).power >= 0.9
    assert tune_trials(RESNET50, 12, -0.03, 200, seed=3).power >= 0.9
    assert tune_trials(QUIET, MAX_ROUNDS, -0.05, 200, seed=3).power >= 0.5


def test_the_interval_covers_the_true_ratio():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        a = 100 * rng.lognormal(0, 0.05, REPEATS)
        b = 120 * rng.lognormal(0, 0.05, REPEATS)
        _, (lo, hi), _ = throughput_stats(a, b, run_noise=0.0)
        covered += lo <= 1.2 <= hi
    assert covered >= 190  # a 99% interval: about 198 of 200


def test_throughput_stats_edges():
    assert throughput_stats([100.0], [100.0, 101.0])[0] is None
    assert "identical" in throughput_stats([5.0, 5.0], [5.0, 5.0], run_noise=0.0)[2]
    assert "identical" in throughput_stats([5.0, 5.0], [6.0, 6.0])[2]  # the default scales them
    p, (lo, hi), _ = throughput_stats([5.0, 5.0], [5.0, 5.0], run_noise=0.1)
    assert p == pytest.approx(1.0) and lo < 1 < hi
    p, (lo, hi), _ = throughput_stats([100.0, 100.0], [300.0, 300.0], run_noise=0.1)
    assert p < 0.01 and lo < 3 < hi and math.isfinite(hi)
    p, (lo, hi), _ = throughput_stats([99.0, 100.0, 101.0], [119.0, 120.0, 121.0])
    assert p < 0.01 and 1 < lo < 1.2 < hi


def test_paired_verdict():
    assert paired_verdict([1.2, 1.25, 1.18, 1.22, 1.21, 1.19])[1] == "faster"
    assert paired_verdict([0.8, 0.82, 0.79])[1] == "slower"
    assert paired_verdict([1.1, 0.9, 1.05, 0.97, 1.02, 0.99])[1] == "within noise"
    assert paired_verdict([1.0, 1.0, 1.0])[1] == "within noise"
    assert paired_verdict([1.1, 1.1])[1] == "cannot tell"


def test_the_binomial_bound():
    assert Tally(200, 0, 0).upper95() == pytest.approx(0.0183, abs=5e-4)
    assert Tally(200, 0, 10).upper95() > 0.08
