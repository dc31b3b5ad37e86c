"""The timing harness and its statistics, on a plain callable (the harness knows no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.harness.timing import TimingPlan, measure, measure_async
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
        # it ends at the call that brings it closest to the duration: within half a call
        assert 2 * w.wall_ns + w.latencies_ns[-1] >= 0.2e9
        assert 3 <= len(w.latencies_ns) <= 11


def test_a_window_ends_closest_to_its_duration_and_runs_one_call_at_least():
    import time

    # 70 ms calls in a 100 ms window: one call (70 ms) is nearer than two (140 ms); a call
    # longer than the window still runs once
    for seconds, calls in [(0.07, 1), (0.3, 1), (0.045, 2)]:
        t = measure(lambda _, s=seconds: time.sleep(s), [0],
                    TimingPlan(batch_size=1, warmup=0, repeats=2, duration=0.1))
        assert [len(w.latencies_ns) for w in t.windows] == [calls, calls], seconds


def test_progress_is_reported():
    calls = []
    measure(Counter(), [0], TimingPlan(batch_size=1, warmup=2, repeats=2, iterations=3),
            lambda phase, v: calls.append((phase, v)))
    assert ("warmup", 2) in calls and ("window", 2) in calls


class FakeRequests:
    """An engine's asynchronous requests: each runs ``seconds`` on its own thread, then calls
    back; it records how many ran at once and every input it started."""

    def __init__(self, seconds: float) -> None:
        import threading

        self.seconds, self.lock = seconds, threading.Lock()
        self.running: set[int] = set()
        self.most = 0
        self.started: list[int] = []

    def __call__(self, slot: int, x: int, done) -> None:
        import threading
        import time

        with self.lock:
            assert slot not in self.running, "a request was started while still running"
            self.running.add(slot)
            self.most = max(self.most, len(self.running))
            self.started.append(x)

        def work() -> None:
            time.sleep(self.seconds)
            with self.lock:
                self.running.discard(slot)
            done()

        threading.Thread(target=work).start()


def test_async_requests_in_flight_counted_once_with_raw_latencies():
    fake = FakeRequests(0.02)
    t = measure_async(fake, 3, [0, 1], TimingPlan(batch_size=4, warmup=1, repeats=2, iterations=7))
    assert fake.most == 3 and not fake.running  # never more than 3 at once; all waited for
    assert len(fake.started) == t.warmup_calls + 2 * 7 and t.warmup_calls == 3  # 1 per request
    for w in t.windows:
        # every request started in the window completed in it, counted once, its latency kept
        assert len(w.latencies_ns) == 7 and w.images == 28
        assert (w.latencies_ns >= 0.02e9).all() and (w.latencies_ns < w.wall_ns).all()
        # 7 requests of 20 ms over 3 in flight take 3 rounds, not 7
        assert 0.06e9 <= w.wall_ns < 0.14e9
        assert w.throughput == pytest.approx(w.images / (w.wall_ns / 1e9))


def test_async_warmup_runs_the_plans_batches_and_one_per_request_at_least():
    for warmup, requests, calls in [(5, 2, 5), (1, 3, 3), (0, 2, 0)]:
        fake = FakeRequests(0.001)
        t = measure_async(fake, requests, [0], TimingPlan(batch_size=1, warmup=warmup, repeats=1,
                                                          iterations=2))
        assert t.warmup_calls == calls and len(fake.started) == calls + 2


def test_async_duration_window_starts_nothing_after_its_time():
    fake = FakeRequests(0.03)
    t = measure_async(fake, 2, [0], TimingPlan(batch_size=1, warmup=0, repeats=1, duration=0.1))
    w = t.windows[0]
    # requests start in pairs at 0, 30, 60 ms; at 90 ms another would end at 120 ms, more than
    # half a request past 100 ms: 6 requests, and the window ends when the last of them completes
    assert len(w.latencies_ns) == len(fake.started) == 6
    assert 0.09e9 <= w.wall_ns < 0.13e9
    # a request longer than the window: each request still starts once
    fake = FakeRequests(0.3)
    t = measure_async(fake, 2, [0], TimingPlan(batch_size=1, warmup=0, repeats=2, duration=0.1))
    assert [len(w.latencies_ns) for w in t.windows] == [2, 2]


def test_async_lost_request_fails_instead_of_hanging(monkeypatch):
    from visionbench.harness import timing

    monkeypatch.setattr(timing, "STALLED", 0.2)
    with pytest.raises(RuntimeError, match="no request completed within"):
        measure_async(lambda slot, x, done: None, 2, [0],
                      TimingPlan(batch_size=1, warmup=1, repeats=1, iterations=2))


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
