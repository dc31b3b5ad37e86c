"""Warm-up, then timed windows: each window runs inferences back to back and keeps every
inference's latency raw. Throughput = images completed / wall time of the window."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Mode = Literal["throughput", "latency"]
MODES: tuple[Mode, ...] = ("throughput", "latency")


@dataclass(frozen=True)
class TimingPlan:
    batch_size: int
    warmup: int  # inferences run and discarded before the first window
    repeats: int  # independent timed windows
    duration: float | None = None  # seconds per window, or
    iterations: int | None = None  # inferences per window

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.iterations is None):
            raise ValueError("a timing plan needs exactly one of duration or iterations")

    @property
    def planned_seconds(self) -> float | None:
        return None if self.duration is None else self.duration * self.repeats


@dataclass(frozen=True)
class Window:
    """One timed window: every inference's latency in nanoseconds and the window's wall time."""

    latencies_ns: np.ndarray
    wall_ns: int
    batch_size: int

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


Progress = Callable[[str, float], None]  # (phase, seconds or iterations done) -> None


def measure(
    infer: Callable[[Any], Any], inputs: Sequence[Any], plan: TimingPlan,
    progress: Progress | None = None, start: Callable[[], None] | None = None,
) -> Timing:
    """Run ``infer`` over ``inputs`` (cycled) per ``plan``; nothing but the call is timed.
    ``start`` is called between warm-up and the first window (the instances' barrier)."""
    clock = time.perf_counter_ns
    n_inputs = len(inputs)
    t0 = clock()
    for i in range(plan.warmup):
        infer(inputs[i % n_inputs])
        if progress:
            progress("warmup", i + 1)
    warmup_ns = clock() - t0
    if start:
        start()
    limit_ns = None if plan.duration is None else int(plan.duration * 1e9)
    limit_it = plan.iterations
    windows: list[Window] = []
    report_every = 200_000_000  # ns between progress callbacks, kept off the per-call path
    for _ in range(plan.repeats):
        lat: list[int] = []
        i = 0
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
            if limit_ns is not None and end - start >= limit_ns:
                break
            if progress and end >= next_report:
                next_report = end + report_every
                progress("timed", (end - start) / 1e9 if limit_ns else i)
        windows.append(Window(np.asarray(lat, dtype=np.int64), end - start, plan.batch_size))
        if progress:
            progress("window", len(windows))
    return Timing(warmup_ns, windows)
