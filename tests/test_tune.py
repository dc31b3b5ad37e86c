"""tune's confirmation: interleaved rounds judged paired, so drifting load cannot crown a setting."""

from __future__ import annotations

import statistics

import pytest

from visionbench.harness.timing import TimingPlan, measure
from visionbench.results.compare import paired_verdict, throughput_stats, verdict
from visionbench.scenarios.rounds import interleave, per_round_ratios, rotation
from visionbench.scenarios.search import MIN_BATCHES
from visionbench.scenarios.setting import Setting


class SlowingSession:
    """A session on a machine whose load grows: every call takes 2% longer than the one before,
    whatever setting makes it. Time is virtual, so the test is exact and instant."""

    def __init__(self) -> None:
        self.calls = 0
        self.clock_ns = 0

    def run(self, _batch: object) -> None:
        self.clock_ns += int(10_000_000 * 1.02 ** self.calls)
        self.calls += 1


def throughput(session: SlowingSession, windows: int = 1) -> list[float]:
    """Images/s of ``windows`` windows of 5 calls of batch 8 (virtual time)."""
    out = []
    for _ in range(windows):
        start = session.clock_ns
        measure(session.run, [0], TimingPlan(batch_size=8, warmup=0, repeats=1, iterations=5))
        out.append(5 * 8 / ((session.clock_ns - start) / 1e9))
    return out


def test_drift_crowns_a_setting_in_the_old_order_and_not_in_rounds():
    default, contender = Setting(116, method="engine"), Setting(64, method="engine")
    # the old order: the default's repeats, then the contender's; both are the same speed
    session = SlowingSession()
    old = {s: throughput(session, 5) for s in (contender, default)}
    speedup = statistics.median(old[default]) / statistics.median(old[contender])
    p, _, _ = throughput_stats(old[contender], old[default], run_noise=0.0)
    assert verdict(p, speedup, None)[0] != "within noise"  # a difference that is not there

    # rounds: every setting once per round, the order rotated; judged on per-round ratios
    session = SlowingSession()
    rounds = interleave([default, contender], 6, lambda s, k: throughput(session)[0])
    ratios = per_round_ratios(rounds, default)[contender]
    assert len(ratios) == 6 and statistics.median(ratios) == pytest.approx(1.0, abs=0.03)
    p, v, why = paired_verdict(ratios)
    assert v == "within noise" and "3 of 6 rounds" in why


def test_rounds_tell_a_real_difference():
    assert paired_verdict([1.06, 1.04, 1.08, 1.05, 1.07, 1.05])[1] == "faster"
    assert paired_verdict([0.9, 0.95, 0.92, 0.9, 0.97, 0.93])[1] == "slower"
    assert paired_verdict([1.1, 1.2])[1] == "cannot tell"


def test_rotation_puts_every_setting_in_every_place():
    assert [rotation("abc", k) for k in range(3)] == [list("abc"), list("bca"), list("cab")]
    assert [rotation("ab", k) for k in range(2)] == [list("ab"), list("ba")]


def test_settings_name_what_they_run():
    from visionbench.engines import get_engine

    (v,) = [v for v in get_engine("openvino").search_space("fp32", 2) if v.tag == "s2-r4"]
    s = Setting(64, method="engine", variant=v)
    assert s.tag == "b64-engine-s2-r4" and s.shape == "b64-s2-r4"
    assert s.as_dict(2)["options"] == {"streams": 2, "requests": 4}
    assert s.as_dict(2)["concurrency"] == "2 streams, 4 requests"
    assert s.in_flight(2) == 4 and s.warmup(2) == 4  # a warm-up batch per request at least
    assert Setting(116).in_flight(2) == 1 and Setting(116).warmup(2) == 2
    assert Setting(116, method="engine").in_flight(2) == 2  # the hint's choice: a stream per core
    assert MIN_BATCHES >= 3


def test_the_engines_propose_their_variants_and_a_given_option_pins_its_axis():
    """OpenVINO proposes streams x requests, ONNX Runtime concurrent sessions, up to the threads;
    an option the user gave keeps only the variants that agree with it (never dropped)."""
    from visionbench.engines import get_engine
    from visionbench.scenarios.setting import agrees

    ov = get_engine("openvino").search_space("fp32", 4)
    assert [v.tag for v in ov] == ["s1-r2", "s2-r2", "s2-r4", "s4-r4", "s4-r8"]
    assert all(v.concurrency.executors <= 4 for v in ov)
    assert [v.tag for v in ov if agrees(v, {"streams": 2, "hint": "throughput"})] == ["s2-r2", "s2-r4"]
    ort = get_engine("onnxruntime").search_space("int8", 4)
    assert [(v.options, v.concurrency.text) for v in ort] == [
        ((("sessions", 2),), "2 sessions"), ((("sessions", 4),), "4 sessions")]


def test_explore_windows_hold_three_batches():
    from types import SimpleNamespace

    from visionbench.scenarios.search import EXPLORE_WINDOW, Search

    search = Search.__new__(Search)  # only the window rule: no run behind it
    search.threads, search.explored = 2, {}
    # nothing measured yet: three calls, or three per request in flight
    assert search.window(Setting(116), EXPLORE_WINDOW) == (None, 3)
    assert search.window(Setting(116, method="engine"), EXPLORE_WINDOW) == (None, 6)
    search.explored = {Setting(116): SimpleNamespace(status="ok", throughput_ips=40.0)}
    seconds, calls = search.window(Setting(128), EXPLORE_WINDOW)
    # 3 batches at 40 img/s, and half a batch more: a window ends within half a request of its
    # duration, so the third batch stays in it
    assert calls is None and seconds == pytest.approx(3.5 * 128 / 40.0)
    seconds, _ = search.window(Setting(128, method="engine"), EXPLORE_WINDOW)
    assert seconds == pytest.approx(4 * 128 / 40.0)  # 2 requests in flight: half of each more
    assert search.window(Setting(1), EXPLORE_WINDOW) == (EXPLORE_WINDOW, None)  # at least 1 s


def test_a_confirmation_cut_short_keeps_an_environment_variants_control(monkeypatch):
    """When the contenders' confirmation does not fit the time left, the slowest are dropped,
    but never the control of an environment variant kept: a variant cannot win without it (a
    real torch-eager tune dropped tcmalloc's control and could not crown it at 1.74x)."""
    import time

    from visionbench.launch.environment import Environment
    from visionbench.scenarios.search import MIN_ROUNDS, Search
    from visionbench.scenarios.setting import control

    default, fast, plain = Setting(116), Setting(32, environment=Environment("tcmalloc")), Setting(32)
    search = Search.__new__(Search)  # only the confirmation plan: no run behind it
    search.deadline = time.monotonic() + 120.0
    monkeypatch.setattr(search, "contenders", lambda: [default, fast, plain, control(fast)])
    monkeypatch.setattr(search, "confirm_cost", lambda candidates, rounds, floor: 35.0 * len(candidates))
    candidates, rounds, _ = search.plan_confirmation()
    assert candidates == [default, fast, control(fast)] and rounds == MIN_ROUNDS
    search.deadline = time.monotonic() + 40.0  # room for two: the variant goes with its control
    assert search.plan_confirmation()[0] == [default, control(fast)]
