"""Warm-up, then timed windows: each window runs inferences back to back (one synchronous call
at a time, or several asynchronous requests kept in flight) and keeps every inference's latency
raw. Throughput = images completed / wall time of the window. With a watch (``harness.watch``),
each window is judged at its end, and one found disturbed is set aside and measured again, up to
``plan.extra`` windows more; with ``plan.until_stable``, windows are added until the throughput's
interval is that narrow, within the same allowance."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from visionbench.harness.watch import Thresholds, WindowWatch
from visionbench.stats import relative_halfwidth


@dataclass(frozen=True)
class TimingPlan:
    batch_size: int
    warmup: int  # inferences run and discarded before the first window
    repeats: int  # independent timed windows
    duration: float | None = None  # seconds per window, or
    iterations: int | None = None  # inferences per window
    #: Windows that may be added to the repeats, in place of disturbed ones or to narrow the
    #: interval (``until_stable``).
    extra: int = 0
    #: Add windows until the throughput's 95% interval's half-width is within this share of its
    #: mean (0.02: 2%); None: the repeats are enough.
    until_stable: float | None = None

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.iterations is None):
            raise ValueError("a timing plan needs exactly one of duration or iterations")

    def more(self, windows: Sequence[Window]) -> bool:
        """Whether another window is needed after ``windows``: fewer clean ones than the repeats,
        or an interval wider than asked, while the allowance lasts."""
        if len(windows) >= self.repeats + self.extra:
            return False
        clean = [w.throughput for w in windows if w.disturbed is None]
        if len(clean) < self.repeats:
            return True
        if self.until_stable is None:
            return False
        half = relative_halfwidth(clean)
        return half is None or half > self.until_stable

    @property
    def planned_seconds(self) -> float | None:
        return None if self.duration is None else self.duration * self.repeats


class Meter(Protocol):
    """Energy counters read at the edges of each window (``visionbench.energy.EnergyMeter``)."""

    def read(self) -> list[int] | None: ...

    def joules(self, start: list[int], end: list[int]) -> dict[str, float]: ...


class Watch(Protocol):
    """What else ran over each window (``visionbench.harness.watch.Watcher``)."""

    thresholds: Thresholds

    def begin(self) -> None: ...

    def end(self) -> WindowWatch: ...

    def settle(self, window_s: float) -> float: ...


def _judged(windows: list[Window], plan: TimingPlan, watch: Watch | None,
            progress: Progress | None) -> None:
    """After a window: where only the speed probe found it disturbed and it ran as fast as the
    clean windows before it, it is clean (the probe, read at its edges, saw a moment the window
    did not); where it was disturbed and another will be measured, wait for the cores to be
    quiet first (the wait recorded on the disturbed window)."""
    w = windows[-1]
    if watch is None or w.watch is None or w.disturbed is None:
        return
    if _overruled(w, windows[:-1], watch.thresholds.slowdown):
        windows[-1] = replace(w, watch=replace(w.watch, disturbed=None, cause=None))
        return
    if not plan.more(windows):
        return
    if progress:
        progress("settle", len(windows))
    waited = watch.settle(w.wall_ns / 1e9)
    windows[-1] = replace(w, watch=replace(w.watch, waited_s=waited))


def _overruled(w: Window, others: Sequence[Window], slowdown: float) -> bool:
    """Whether only the probe called ``w`` disturbed and it ran as fast as the clean windows
    among ``others`` (at most ``slowdown`` below their median)."""
    rates = [x.throughput for x in others if x.disturbed is None]
    return (w.watch is not None and w.watch.cause == "slowdown" and bool(rates)
            and w.throughput >= (1 - slowdown) * float(np.median(rates)))


def _reviewed(windows: list[Window], watch: Watch | None) -> list[Window]:
    """At the end: a window the probe alone set aside before any clean one had run (the first,
    say) is clean where it ran as fast as the clean windows measured after it."""
    if watch is None:
        return windows
    return [replace(w, watch=replace(w.watch, disturbed=None, cause=None))
            if w.watch is not None and _overruled(w, windows, watch.thresholds.slowdown) else w
            for w in windows]


@dataclass(frozen=True)
class Window:
    """One timed window: every inference's latency in nanoseconds and the window's wall time
    (and the energy each counter of a meter saw over it, in joules)."""

    latencies_ns: np.ndarray
    wall_ns: int
    batch_size: int
    energy_j: dict[str, float] | None = None
    watch: WindowWatch | None = None

    @property
    def disturbed(self) -> str | None:
        """Why the window was disturbed (it is left out of the figure); None: it is clean."""
        return None if self.watch is None else self.watch.disturbed

    @property
    def images(self) -> int:
        return len(self.latencies_ns) * self.batch_size

    @property
    def throughput(self) -> float:
        return self.images / (self.wall_ns / 1e9)


@dataclass(frozen=True)
class Timing:
    warmup_ns: int
    windows: list[Window]
    #: Batches run in the warm-up (with several requests in flight, at least one per request).
    warmup_calls: int = 0
    #: The latency of the session's first inference (the first of the warm-up), if it had one.
    first_ns: int | None = None


def _energy(meter: Meter | None, start: list[int] | None) -> dict[str, float] | None:
    if meter is None or start is None:
        return None
    end = meter.read()
    return None if end is None else meter.joules(start, end)


def clean(windows: Sequence[Window]) -> list[Window]:
    """The windows a figure is made of: the clean ones, or all where none is."""
    return [w for w in windows if w.disturbed is None] or list(windows)


Progress = Callable[[str, float], None]  # (phase, seconds or iterations done) -> None


def measure(
    infer: Callable[[Any], Any], inputs: Sequence[Any], plan: TimingPlan,
    progress: Progress | None = None, go: Callable[[], None] | None = None,
    meter: Meter | None = None, watch: Watch | None = None,
) -> Timing:
    """Run ``infer`` over ``inputs`` (cycled) per ``plan``; nothing but the call is timed.
    ``go`` is called between warm-up and the first window (the instances' barrier); ``meter``
    and ``watch`` are read at each window's edges."""
    clock = time.perf_counter_ns
    n_inputs = len(inputs)
    t0 = clock()
    first_ns = None
    for i in range(plan.warmup):
        infer(inputs[i % n_inputs])
        if first_ns is None:
            first_ns = clock() - t0
        if progress:
            progress("warmup", i + 1)
    warmup_ns = clock() - t0
    if go:
        go()
    limit_ns = None if plan.duration is None else int(plan.duration * 1e9)
    limit_it = plan.iterations
    windows: list[Window] = []
    report_every = 200_000_000  # ns between progress callbacks, kept off the per-call path
    while plan.more(windows):
        lat: list[int] = []
        i = 0
        counters = meter.read() if meter is not None else None
        if watch is not None:
            watch.begin()
        start = clock()
        end = start
        next_report = start + report_every
        while True:
            x = inputs[i % n_inputs]
            a = clock()
            infer(x)
            end = clock()
            lat.append(end - a)
            i += 1
            if limit_it is not None and i >= limit_it:
                break
            # Ends at the call that brings the window closest to its duration: another call
            # (as long as this one) would end more than halfway past it.
            if limit_ns is not None and 2 * (end - start) + (end - a) >= 2 * limit_ns:
                break
            if progress and end >= next_report:
                next_report = end + report_every
                progress("timed", (end - start) / 1e9 if limit_ns else i)
        windows.append(Window(np.asarray(lat, dtype=np.int64), end - start, plan.batch_size,
                              _energy(meter, counters), watch.end() if watch else None))
        if progress:
            progress("window", len(windows))
        _judged(windows, plan, watch, progress)
    return Timing(warmup_ns, _reviewed(windows, watch), plan.warmup, first_ns)


#: Starts a batch on request ``slot`` without waiting and calls ``done`` (from any thread) once it
#: has completed: the engine's asynchronous API (``Session.start``).
Start = Callable[[int, Any, Callable[[], None]], None]
#: Seconds without a single completion after which a request is taken for lost (an engine that
#: failed a request without calling back): the measurement fails instead of waiting for ever.
STALLED = 600.0


class _InFlight:
    """``requests`` asynchronous requests: a slot is taken when a request is free, and each
    completion's latency (from its start to its completion callback) is kept."""

    def __init__(self, start: Start, requests: int) -> None:
        self._start = start
        self.requests = requests
        self._idle: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(requests):
            self._idle.put(slot)
        self._started = [0] * requests
        self._callbacks = [self._completion(slot) for slot in range(requests)]
        self.latencies: list[int] = []
        self.last_end = 0
        self.last_latency = 0  # the latest completion's, any request's

    def _completion(self, slot: int) -> Callable[[], None]:
        def done() -> None:
            end = time.perf_counter_ns()
            # Appended before the slot is freed: the submitting thread reads both after drain().
            latency = end - self._started[slot]
            self.latencies.append(latency)
            self.last_latency = latency
            self.last_end = max(self.last_end, end)
            self._idle.put(slot)
        return done

    def free(self) -> int:
        """A free request's slot, waiting for one to complete if none is."""
        try:
            return self._idle.get(timeout=STALLED)
        except queue.Empty:
            raise RuntimeError(f"no request completed within {STALLED:.0f} s") from None

    def release(self, slot: int) -> None:
        """Give back a slot taken but not used."""
        self._idle.put(slot)

    def submit(self, slot: int, x: Any) -> None:
        """Start ``x`` on the free request ``slot``."""
        self._started[slot] = time.perf_counter_ns()
        self._start(slot, x, self._callbacks[slot])

    def drain(self) -> None:
        """Wait until every request has completed."""
        slots = [self.free() for _ in range(self.requests)]
        for slot in slots:
            self._idle.put(slot)

    def take(self) -> list[int]:
        out, self.latencies = self.latencies, []
        return out

    def close(self) -> None:
        """Drop the completions (they reach back to this object) and ``start`` (the session's):
        a measurement's session is freed the moment it is dropped, not at the collector's next
        pass, so the next measurement's memory does not include it."""
        self._callbacks.clear()
        del self._start


def measure_async(
    start: Start, requests: int, inputs: Sequence[Any], plan: TimingPlan,
    progress: Progress | None = None, go: Callable[[], None] | None = None,
    meter: Meter | None = None, watch: Watch | None = None,
) -> Timing:
    """Like ``measure``, with ``requests`` asynchronous requests kept in flight, as OpenVINO's
    benchmark_app runs its throughput hint: a new batch starts the moment a request is free.
    Each window starts every request at once; once its iterations are started, or a new request
    would end more than half a request past its duration, no request is started, and it ends
    with the completion of the last one in flight, so every request started is counted once and
    no stream idles at the end while another starts a new batch. Throughput is the images
    completed over that wall time, latency each request's start to completion. The warm-up runs
    ``plan.warmup`` batches, and at least one per request, so every stream has run a batch
    before timing starts."""
    flight = _InFlight(start, requests)
    try:
        return _timed_async(flight, inputs, plan, progress, go, meter, watch)
    finally:
        flight.close()


def _timed_async(flight: _InFlight, inputs: Sequence[Any], plan: TimingPlan,
                 progress: Progress | None, go: Callable[[], None] | None, meter: Meter | None,
                 watch: Watch | None) -> Timing:
    requests = flight.requests
    n_inputs = len(inputs)
    clock = time.perf_counter_ns
    t0 = clock()
    i = 0
    warmup = max(plan.warmup, requests) if plan.warmup else 0
    for _ in range(warmup):
        flight.submit(flight.free(), inputs[i % n_inputs])
        i += 1
        if progress:
            progress("warmup", min(i, plan.warmup))
    flight.drain()
    warm = flight.take()
    first_ns = min(warm) if warm else None  # the first to complete, requests started together
    warmup_ns = clock() - t0
    if go:
        go()
    limit_ns = None if plan.duration is None else int(plan.duration * 1e9)
    windows: list[Window] = []
    report_every = 200_000_000
    while plan.more(windows):
        submitted = 0
        counters = meter.read() if meter is not None else None
        if watch is not None:
            watch.begin()
        begin = clock()
        next_report = begin + report_every
        while True:
            slot = flight.free()
            now = clock()
            # Once every request has started, one more starts only while it would end at most
            # half its length (the latest completion's) past the duration: the window ends
            # closest to its duration.
            if (plan.iterations is not None and submitted >= plan.iterations) or (
                    limit_ns is not None and submitted >= requests
                    and 2 * (now - begin) + flight.last_latency >= 2 * limit_ns):
                flight.release(slot)
                break
            flight.submit(slot, inputs[i % n_inputs])
            i += 1
            submitted += 1
            if progress and now >= next_report:
                next_report = now + report_every
                progress("timed", (now - begin) / 1e9 if limit_ns else submitted)
        flight.drain()
        lat = flight.take()
        windows.append(Window(np.asarray(lat, dtype=np.int64), flight.last_end - begin,
                              plan.batch_size, _energy(meter, counters),
                              watch.end() if watch else None))
        if progress:
            progress("window", len(windows))
        _judged(windows, plan, watch, progress)
    return Timing(warmup_ns, _reviewed(windows, watch), warmup, first_ns)
