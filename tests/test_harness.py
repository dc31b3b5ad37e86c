"""The timing harness and its statistics, on a plain callable (the harness knows no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.harness.timing import TimingPlan, measure
from visionbench.stats import cv, latency_summary


class Counter:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, x: int) -> int:
        self.seen.append(x)
        return x


def test_iterations_mode_counts_and_keeps_warmup_out():
    f = Counter()
    t = measure(f, [0, 1, 2], TimingPlan(batch_size=4, warmup=5, repeats=3, iterations=7))
    assert len(f.seen) == 5 + 3 * 7
    assert [len(w.latencies_ns) for w in t.windows] == [7, 7, 7]
    assert all(w.images == 28 for w in t.windows)
    assert f.seen[:6] == [0, 1, 2, 0, 1, 0]  # inputs cycle; timing restarts the cycle
    for w in t.windows:
        assert (w.latencies_ns > 0).all() and w.latencies_ns.sum() <= w.wall_ns
        assert w.throughput == pytest.approx(w.images / (w.wall_ns / 1e9))


def test_duration_mode_stops_after_the_window():
    import time

    def sleepy(_):
        time.sleep(0.01)

    t = measure(sleepy, [0], TimingPlan(batch_size=1, warmup=0, repeats=2, duration=0.1))
    for w in t.windows:
        assert w.wall_ns >= 0.1e9
        assert 3 <= len(w.latencies_ns) <= 11


def test_progress_is_reported():
    calls = []
    measure(Counter(), [0], TimingPlan(batch_size=1, warmup=2, repeats=2, iterations=3),
            lambda phase, v: calls.append((phase, v)))
    assert ("warmup", 2) in calls and ("window", 2) in calls


def test_plan_needs_exactly_one_limit():
    with pytest.raises(ValueError):
        TimingPlan(batch_size=1, warmup=0, repeats=1)
    with pytest.raises(ValueError):
        TimingPlan(batch_size=1, warmup=0, repeats=1, duration=1, iterations=1)


def test_latency_summary_percentiles():
    ns = np.arange(1, 1001, dtype=np.int64) * 1_000_000  # 1..1000 ms
    s = latency_summary(ns)
    assert s.count == 1000 and s.min_ms == 1 and s.max_ms == 1000
    assert s.p50_ms == pytest.approx(500.5) and s.p90_ms == pytest.approx(900.1)
    assert s.p99_ms == pytest.approx(990.01) and s.p999_ms == pytest.approx(999.001)
    assert s.mean_ms == pytest.approx(500.5)
    assert s.stdev_ms == pytest.approx(np.std(np.arange(1, 1001), ddof=1))
    assert latency_summary(ns[:999]).p999_ms is None  # not enough samples


def test_cv():
    assert cv([10.0]) is None
    assert cv([10.0, 10.0, 10.0]) == 0.0
    assert cv([9.0, 11.0]) == pytest.approx(np.std([9, 11], ddof=1) / 10)


def test_reference_defaults():
    cfg = RunConfig.of(engines=["openvino"])
    assert cfg.batch_for("fp32", "throughput") == 116
    assert cfg.batch_for("int8", "throughput") == 116
    assert cfg.batch_for("bf16", "throughput") == 80
    assert cfg.batch_for("bf16", "latency") == 1
    assert cfg.plan("fp32", "throughput").warmup >= 2  # the first big batch runs slow
    assert RunConfig.of(engines=["x"], batch_size=8).batch_for("bf16", "throughput") == 8
    assert RunConfig.of(engines=["x"], iterations=5).plan("fp32", "latency").duration is None


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"threads": -1}, {"repeats": 0}, {"iterations": 0},
               {"duration": 0.0}, {"duration": -3.0}, {"warmup": -1},
               {"duration": 1.0, "iterations": 3}],
)
def test_bad_numbers_rejected(kwargs):
    with pytest.raises(VisionbenchError):
        RunConfig.of(engines=["openvino"], **kwargs)
