"""The one way a task is prepared and timed: the engine's session prepared, its inputs fed, its
warm-up and timed windows run (in this process, or in pinned instances released together), its
memory, energy and cold start read, its outputs' fidelity to FP32 judged, and its Measurement
record built."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from visionbench.cache import CacheLog, events_text, watch
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import Engine, Precision, Session, get_engine
from visionbench.engines.base import Execution
from visionbench.harness.energy import EnergyMeter
from visionbench.harness.instances import (
    Layout,
    combined_throughput,
    pinning,
    pooled_latencies,
    run_instances,
)
from visionbench.harness.memory import PeakMemory, rss_mib
from visionbench.harness.timing import Progress, Timing, TimingPlan, Window, measure, measure_async
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import InstanceResult, Measurement, RunStore, now
from visionbench.results.schema import ColdStart, Concurrency, Energy, Fidelity, Memory
from visionbench.scenarios.fidelity import FidelityCheck
from visionbench.scenarios.plan import layout_for, open_data, study_calibration
from visionbench.scenarios.scenario import StartHook, Task
from visionbench.stats import CV_WARN, cv, latency_summary
from visionbench.sysinfo import numa_cores


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


@dataclass(frozen=True)
class InstanceJob:
    """What one pinned instance process needs to prepare and time a task by itself."""

    task: Task
    cfg: RunConfig
    model: ModelSpec
    plan: TimingPlan
    threads: int


def _prepare_and_time(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig,
                      plan: TimingPlan, threads: int, cal: Calibration,
                      progress: Progress | None, start: Callable[[], None] | None = None,
                      ready: Callable[[], None] | None = None,
                      check: FidelityCheck | None = None) -> Timed:
    """Prepare and time ``task``; with ``check``, the session's outputs on its images after.
    Memory is read once the session and its inputs are ready, and its peak over the warm-up and
    the timed windows alone; the energy counters at each window's edges."""
    with watch() as cache:
        session = _prepare(task, engine, model, cfg, threads, cal, plan.batch_size)
    try:
        pool = input_pool(model, plan.batch_size, seed=cfg.study.seed + plan.batch_size)
        inputs = [session.feed(x) for x in pool]
        meter = EnergyMeter.open()
        if ready is not None:
            ready()
        prepared = rss_mib()
        peak = PeakMemory()
        peak.start()
        if session.requests > 1:
            timing = measure_async(session.start, session.requests, inputs, plan, progress, start,
                                   meter)
        else:
            timing = measure(session.run, inputs, plan, progress, start, meter)
        peak_mib = peak.stop()
        outputs = check.collect(session, plan.batch_size) if check is not None else None
        return Timed(timing, session.execution, outputs, prepared, peak_mib, peak.method, cache,
                     [d.name for d in meter.domains], meter.unavailable)
    finally:
        session.close()


def _prepare(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, threads: int,
             cal: Calibration, batch: int, precision: Precision | None = None) -> Session:
    return engine.prepare(cfg.spec(engine, model, precision or task.precision, batch, cal, threads))


def instance_main(job: InstanceJob, barrier: Callable[[], None]) -> Timed:
    """The target each instance process runs (see ``harness.instances``)."""
    cfg = job.cfg
    cal, _ = study_calibration(cfg, job.model, open_data(cfg))
    timed = _prepare_and_time(job.task, get_engine(job.task.engine), job.model, cfg, job.plan,
                              job.threads, cal, None, barrier)
    return timed


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
        spread = cv(self.per_repeat)
        if spread is not None and spread > CV_WARN:
            out.append(f"unstable: throughput varies {spread:.1%} between repeats (over "
                       f"{CV_WARN:.0%}); close other programs, raise --duration or --repeats")
        return out


def time_task(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, reporter: Reporter,
              calibration: Calibration, start: StartHook | None = None,
              check: FidelityCheck | None = None) -> TimedRun:
    """Prepare and time ``task`` in this process, or in the pinned instances its layout asks
    for; with ``check``, this process's session keeps its outputs for the fidelity check."""
    plan = cfg.plan(task.precision, task.mode, task.batch)
    started = now()
    progress = reporter.start(task.id, plan)
    released: list[float] = []

    def phase(name: str) -> Callable[[], None]:
        def call() -> None:
            if start is not None:
                at = start(task, name)
                if name == "go":
                    released.append(time.time() if at is None else at)
        return call

    nodes = numa_cores()
    layout = layout_for(cfg, task.mode, nodes)
    if layout is None:
        # FP32's outputs are the reference: taken from a measurement at a small batch (its
        # latency), made apart (a session at batch 1) before one large batch would be run.
        wanted = check is not None and (task.precision != "fp32" or (
            not check.has_reference(task.engine) and plan.batch_size <= len(check.images)))
        one = _prepare_and_time(task, engine, model, cfg, plan, cfg.launch.threads, calibration,
                                progress, phase("go"), phase("ready"), check if wanted else None)
        return TimedRun(plan, [one], cfg.launch.threads, [w.throughput for w in one.timing.windows],
                        started, released[0] if released else None)
    threads = cfg.launch.threads if cfg.launch.threads_explicit else layout.cores_per_instance

    def tick(seconds: float) -> None:
        if progress and plan.duration:
            progress("window", min(int(seconds // plan.duration), plan.repeats))
            progress("timed", seconds % plan.duration)

    job = InstanceJob(task, cfg, model, plan, threads)
    phase("ready")()
    done = run_instances("visionbench.scenarios.measure:instance_main", [job] * layout.instances,
                         layout, nodes, tick, phase("go"))
    timed: list[Timed] = [d.value for d in done]
    instances = [InstanceResult(
        index=d.index, cores=list(d.cores), affinity=d.affinity,
        throughput_ips=statistics.median(w.throughput for w in t.timing.windows),
        throughput_per_repeat=[w.throughput for w in t.timing.windows],
        latency=latency_summary(np.concatenate([w.latencies_ns for w in t.timing.windows])),
    ) for d, t in zip(done, timed, strict=True)]
    return TimedRun(plan, timed, threads, combined_throughput([t.timing for t in timed]), started,
                    released[0] if released else None, layout, pinning(nodes), instances)


def _fidelity(run: TimedRun, task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig,
              calibration: Calibration, check: FidelityCheck) -> Fidelity | None:
    """FP32's outputs kept as the reference; a lower precision's judged against them (sessions
    at batch 1 made here where the timed one's outputs are not at hand)."""
    def session(precision: str | None = None) -> Session:
        return _prepare(task, engine, model, cfg, cfg.launch.threads, calibration, 1, precision)

    if task.precision == "fp32":
        if run.outputs is not None:
            check.keep_reference(task.engine, run.outputs)
        return None
    return check.judge(engine, run.outputs, session, lambda: session("fp32"))


def record(run: TimedRun, task: Task, model: ModelSpec, store: RunStore,
           fidelity: Fidelity | None = None) -> Measurement:
    """The Measurement of a timed run (its raw latencies written beside the results)."""
    ex, plan, timings = run.timed[0].execution, run.plan, run.timings
    pooled = pooled_latencies(timings)
    raw = store.write_raw(task.id, [w.latencies_ns.tolist() for w in run.windows])
    extra: dict[str, Any] = {} if run.layout is None else {
        "instances": run.layout.instances, "cores_per_instance": run.layout.cores_per_instance,
        "layout": run.layout.name, "layout_reason": run.layout.reason,
        "pinning": run.pinning, "per_instance": run.instances}
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        model=model.name, method=task.method, engine_method=task.same or None,
        batch_size=plan.batch_size, threads=run.threads, status="ok",
        support=task.support.status, executed_precision=ex.executed_precision,
        emulated=task.support.status == "emulated", layer_precisions=ex.layer_precisions,
        quantized_ops=ex.quantized_ops, engine_details=ex.details,
        concurrency=Concurrency(**asdict(ex.concurrency)),
        throughput_ips=statistics.median(run.per_repeat), throughput_per_repeat=run.per_repeat,
        cv=cv(run.per_repeat), latency=latency_summary(pooled), raw_latencies=raw,
        repeats=plan.repeats, warmup_iterations=max(t.warmup_calls for t in timings),
        warmup_seconds=max(t.warmup_ns for t in timings) / 1e9, timed_iterations=len(pooled),
        timed_seconds=sum(w.wall_ns for w in timings[0].windows) / 1e9,
        prepare_seconds=ex.prepare_seconds, memory=memory_record(run.timed),
        energy=energy_record(run.timed[0], sum(w.images for w in run.windows)),
        cold_start=cold_record(run.timed[0]), warnings=run.warnings(task), fidelity=fidelity,
        released_at=run.released_at, started_at=run.started_at, finished_at=now(), **extra,
    )


def measure_task(
    task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, store: RunStore,
    reporter: Reporter, calibration: Calibration, start: StartHook | None = None,
    check: FidelityCheck | None = None,
) -> Measurement:
    """Time ``task`` (``time_task``) and make its record; with ``check``, its outputs' fidelity
    to FP32 (an FP32 task's outputs become the reference)."""
    run = time_task(task, engine, model, cfg, reporter, calibration, start, check)
    fid = _fidelity(run, task, engine, model, cfg, calibration, check) if check else None
    return record(run, task, model, store, fid)
