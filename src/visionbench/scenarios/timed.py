"""A task timed: each process's ``Timed`` (its windows, what ran, memory, energy, the cache's
log) gathered in a ``TimedRun``, with what a reader must be told about it (what ran otherwise
than asked, disturbed windows, spread), and the records made of it: memory, energy, cold start
and every window with what the watcher saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionbench.cache import CacheLog, events_text
from visionbench.engines.base import Execution
from visionbench.harness.instances import Layout
from visionbench.harness.timing import Timing, TimingPlan, Window
from visionbench.results import InstanceResult
from visionbench.results.schema import ColdStart, Consumer, Energy, Memory, WindowRecord
from visionbench.scenarios.scenario import Task
from visionbench.stats import CV_WARN, cv, relative_halfwidth


@dataclass(frozen=True)
class Timed:
    """A task prepared and timed in one process: the timing, what ran, the outputs for the
    fidelity check, and what the process observed on the way (memory, cache, energy meter)."""

    timing: Timing
    execution: Execution
    outputs: list[np.ndarray] | None
    prepared_mib: float
    peak_mib: float
    memory_method: str
    #: What the cache did while the session was prepared (its events and notes).
    cache: CacheLog
    energy_domains: list[str]
    energy_unavailable: str | None
    #: The process's environment, read from inside it (``launch.environment.observe``).
    environment: dict[str, Any] | None = None


def memory_record(timed: list[Timed]) -> Memory:
    """The memory of a measurement: its processes' figures summed (instances run at once)."""
    return Memory(prepared_mib=round(sum(t.prepared_mib for t in timed), 1),
                  peak_mib=round(sum(t.peak_mib for t in timed), 1), method=timed[0].memory_method)


def energy_record(timed: Timed, images: float) -> Energy:
    """Joules over the timed windows of ``timed`` (the counters are the machine's: with
    instances, the first instance's windows, which the others' overlap), per image of
    ``images`` (every instance's, over those windows)."""
    windows: list[Window] = timed.timing.windows
    if timed.energy_unavailable is not None or any(w.energy_j is None for w in windows):
        return Energy(available=False, reason=timed.energy_unavailable or "a counter could not be read")
    joules = {d: sum(w.energy_j[d] for w in windows if w.energy_j) for d in timed.energy_domains}
    total = sum(joules.values())
    seconds = sum(w.wall_ns for w in windows) / 1e9
    return Energy(available=True, domains=timed.energy_domains,
                  joules={d: round(j, 3) for d, j in joules.items()},
                  joules_per_image=total / images if images else None,
                  watts=total / seconds if seconds else None)


def cold_record(timed: Timed) -> ColdStart:
    ex, first = timed.execution, timed.timing.first_ns
    return ColdStart(
        read_seconds=ex.read_seconds, prepare_seconds=ex.prepare_seconds,
        cache=events_text(timed.cache.events),
        first_inference_ms=None if first is None else first / 1e6)


@dataclass(frozen=True)
class TimedRun:
    """A task timed, in this process or in pinned instances released together: each process's
    ``Timed`` (its windows, what ran, memory, energy, the cache's log), the threads each ran on,
    the throughput per repeat (the instances' sum), the instances' own figures and when the timed
    windows were released."""

    plan: TimingPlan
    timed: list[Timed]
    threads: int
    per_repeat: list[float]
    started_at: str
    released_at: float | None = None
    #: Pinned instances: their layout, how they were pinned and each one's figures.
    layout: Layout | None = None
    pinning: str | None = None
    instances: list[InstanceResult] = field(default_factory=list)

    @property
    def timings(self) -> list[Timing]:
        return [t.timing for t in self.timed]

    @property
    def windows(self) -> list[Window]:
        return [w for t in self.timings for w in t.windows]

    @property
    def outputs(self) -> list[np.ndarray] | None:
        """The session's outputs for the fidelity check (the instances' sessions are gone)."""
        return self.timed[0].outputs if self.layout is None else None

    def warnings(self, task: Task) -> list[str]:
        """The cache's notes, then what ran otherwise than asked, how, and how stable."""
        out = list(dict.fromkeys(n for t in self.timed for n in t.cache.notes))
        ex = self.timed[0].execution
        if ex.executed_precision != task.precision:
            out.append(f"asked for {task.precision}, {task.engine} executed "
                       f"{ex.executed_precision} ({ex.layer_precisions})")
        if task.support.reason:
            out.append(task.support.reason)
        if self.layout is not None:
            out.append(f"{self.layout.describe()} (instances x cores, {self.layout.name} layout: "
                       f"{self.layout.reason}); throughput is the instances' sum, latency pooled")
        out += self.disturbance(task)
        spread = cv(self.per_repeat)
        if spread is not None and spread > CV_WARN:
            out.append(f"unstable: throughput varies {spread:.1%} between repeats (over "
                       f"{CV_WARN:.0%}) in windows no other process disturbed; raise --duration "
                       "or --repeats, or give --until-stable")
        half = relative_halfwidth(self.per_repeat)
        if self.plan.until_stable is not None and (half is None or half > self.plan.until_stable):
            out.append(f"--until-stable {self.plan.until_stable:.1%} not reached: the interval "
                       f"is ±{half or float('nan'):.1%} after {len(self.windows)} windows "
                       f"(--extra-windows {self.plan.extra} spent)")
        return out

    @property
    def clean_windows(self) -> int:
        """Windows the figures are made of (pinned instances: repeats none of them disturbed)."""
        if self.layout is None:
            return sum(w.disturbed is None for w in self.windows)
        return sum(all(t.windows[r].disturbed is None for t in self.timings)
                   for r in range(len(self.per_repeat)))

    @property
    def disturbed(self) -> bool:
        return self.clean_windows < self.plan.repeats

    def disturbance(self, task: Task) -> list[str]:
        """Each disturbed window named, and whether the figure is left disturbed."""
        out = []
        for n, t in enumerate(self.timings):
            who = "" if self.layout is None else f" of instance {n}"
            for i, w in enumerate(t.windows, 1):
                if w.disturbed is not None:
                    waited = w.watch.waited_s if w.watch is not None else None
                    out.append(f"window {i}{who} of {task.id} disturbed: {w.disturbed}; left out "
                               "of the figure" + ("" if waited is None else
                                                  f", measured again after {waited:.1f} s "
                                                  "waiting for the cores to be quiet"))
        if self.disturbed:
            how = ("pinned instances are not measured again (a window re-run alone would not "
                   "overlap its siblings'), so the figure includes them" if self.layout else
                   f"the {self.plan.extra} extra windows allowed (--extra-windows) are spent" +
                   ("" if self.clean_windows else "; the figure is made of disturbed windows"))
            out.append(f"disturbed: {self.clean_windows} of {self.plan.repeats} windows clean; "
                       f"{how}")
        return out


def window_records(run: TimedRun) -> list[WindowRecord]:
    """Every window timed, with what the watcher saw over it."""
    out = []
    for n, t in enumerate(run.timings):
        for i, w in enumerate(t.windows, 1):
            seen: dict[str, Any] = {}
            if (x := w.watch) is not None:
                seen = {"others": x.others, "steal": x.steal, "iowait": x.iowait,
                        "pressure": x.pressure, "speed": x.speed, "freq_mhz": x.freq_mhz,
                        "throttled": x.throttled, "watcher_cpu_s": x.watcher_cpu_s, "probe_s": x.probe_s,
                        "waited_s": x.waited_s,
                        "neighbours": x.neighbours,
                        "top": [Consumer(comm=c.comm, pid=c.pid, cores=c.cores) for c in x.top]}
            out.append(WindowRecord(index=i, instance=n if run.layout else None,
                                    throughput_ips=w.throughput, seconds=w.wall_ns / 1e9,
                                    disturbed=w.disturbed, **seen))
    return out
