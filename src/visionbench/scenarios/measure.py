"""The one way a task is prepared and timed: the engine's session prepared, its inputs fed, its
warm-up and timed windows run (in this process, or in pinned instances released together), its
memory, energy and cold start read, its outputs' fidelity to FP32 judged, and its Measurement
record built."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from visionbench.cache import watch
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import Engine, Precision, Session, get_engine
from visionbench.engines.base import Execution
from visionbench.harness.energy import EnergyMeter
from visionbench.harness.instances import (
    combined_throughput,
    pinning,
    pooled_latencies,
    run_instances,
)
from visionbench.harness.memory import PeakMemory, rss_mib
from visionbench.harness.timing import (
    Progress,
    TimingPlan,
    clean,
    measure,
    measure_async,
)
from visionbench.harness.watch import Thresholds, Watcher
from visionbench.launch.environment import here, observe
from visionbench.launch.protocol import Result
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import InstanceResult, Measurement, RunStore, now
from visionbench.results.schema import (
    Concurrency,
    Fidelity,
)
from visionbench.scenarios.fidelity import FidelityCheck
from visionbench.scenarios.fresh import in_fresh_process
from visionbench.scenarios.plan import layout_for, open_data, study_calibration
from visionbench.scenarios.scenario import StartHook, Task
from visionbench.scenarios.timed import (
    Timed,
    TimedRun,
    cold_record,
    energy_record,
    memory_record,
    window_records,
)
from visionbench.stats import cv, latency_summary, t_interval
from visionbench.sysinfo import numa_cores


@dataclass(frozen=True)
class InstanceJob:
    """What one pinned instance process needs to prepare and time a task by itself."""

    task: Task
    cfg: RunConfig
    model: ModelSpec
    plan: TimingPlan
    threads: int


@cache
def watcher(thresholds: Thresholds) -> Watcher:
    """This process's window watcher (one per process: its probe's speeds are kept)."""
    return Watcher.here(thresholds)


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
        watching = watcher(cfg.thresholds)
        watching.forget()
        peak = PeakMemory()
        peak.start()
        if session.requests > 1:
            timing = measure_async(session.start, session.requests, inputs, plan, progress, start,
                                   meter, watching)
        else:
            timing = measure(session.run, inputs, plan, progress, start, meter, watching)
        peak_mib = peak.stop()
        outputs = check.collect(session, plan.batch_size) if check is not None else None
        return Timed(timing, session.execution, outputs, prepared, peak_mib, peak.method, cache,
                     [d.name for d in meter.domains], meter.unavailable, observe())
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


def fresh_main(conn: Connection, job: InstanceJob) -> None:
    """The target of a fresh process that times a task under another environment than its
    parent's (``time_task``): its Timed sent back."""
    conn.send(Result(instance_main(job, lambda: None)))


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
    env = cfg.environment
    if layout is None and (env != here() or cfg.launch.fresh_process):
        # LD_PRELOAD acts on a process started with it: a fresh one, this process's threads
        job = InstanceJob(task, cfg, model, plan, cfg.launch.threads)
        one = in_fresh_process("visionbench.scenarios.measure:fresh_main", job, task.engine, None,
                               env.variables())
        return TimedRun(plan, [one], cfg.launch.threads,
                        [w.throughput for w in clean(one.timing.windows)], started)
    if layout is None:
        # FP32's outputs are the reference: taken from a measurement at a small batch (its
        # latency), made apart (a session at batch 1) before one large batch would be run.
        wanted = check is not None and (task.precision != "fp32" or (
            not check.has_reference(task.engine) and plan.batch_size <= len(check.images)))
        one = _prepare_and_time(task, engine, model, cfg, plan, cfg.launch.threads, calibration,
                                progress, phase("go"), phase("ready"), check if wanted else None)
        return TimedRun(plan, [one], cfg.launch.threads,
                        [w.throughput for w in clean(one.timing.windows)], started,
                        released[0] if released else None)
    threads = cfg.launch.threads if cfg.launch.threads_explicit else layout.cores_per_instance

    def tick(seconds: float) -> None:
        if progress and plan.duration:
            progress("window", min(int(seconds // plan.duration), plan.repeats))
            progress("timed", seconds % plan.duration)

    # Instances time their windows together: none re-runs a disturbed window by itself.
    plan = dataclasses.replace(plan, extra=0, until_stable=None)
    job = InstanceJob(task, cfg, model, plan, threads)
    phase("ready")()
    done = run_instances("visionbench.scenarios.measure:instance_main", [job] * layout.instances,
                         layout, nodes, tick, phase("go"), env.variables())
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
    return check.judge(engine, run.outputs, session, lambda: session("fp32"), task.precision)


def contradiction(task: Task, ex: Execution, fidelity: Fidelity | None) -> list[str]:
    """What ran, cross-checked: a lower precision whose outputs are FP32's bit for bit did not
    run, whatever the engine recorded."""
    if fidelity is None or not fidelity.contradiction:
        return []
    return [f"contradiction: asked {task.precision}, {task.engine} recorded "
            f"{ex.executed_precision}, but the outputs are FP32's bit for bit: "
            f"{task.precision.upper()} did not run; the figure is not {task.precision}'s"]


def environment_warnings(run: TimedRun) -> list[str]:
    """What the process's environment, read inside it, says against what was asked: an Intel
    OpenMP variable (KMP_) where Intel's runtime does not serve OpenMP's entry points."""
    seen = run.timed[0].environment or {}
    # Those given with --env only: a library imported before may set its own (TensorFlow's
    # KMP_INIT_AT_FORK, KMP_DUPLICATE_LIB_OK), which the worker inherits.
    kmp = sorted(k for k in seen.get("env", {}) if k.startswith("KMP_"))
    served = seen.get("openmp_from")
    if kmp and "libiomp5" not in (served or ""):
        here = f"OpenMP is served by {served}" if served else "no OpenMP runtime is loaded globally"
        return [f"{', '.join(kmp)}: read by Intel's OpenMP only, and here {here} (give "
                "--omp-runtime intel): it does nothing here"]
    return []


def record(run: TimedRun, task: Task, model: ModelSpec, store: RunStore,
           fidelity: Fidelity | None = None) -> Measurement:
    """The Measurement of a timed run (its raw latencies written beside the results): its
    figures from the clean windows (pinned instances: from all)."""
    ex, plan, timings = run.timed[0].execution, run.plan, run.timings
    if run.layout is None:
        used = clean(run.windows)
        pooled = np.concatenate([w.latencies_ns for w in used])
    else:
        used, pooled = run.windows, pooled_latencies(timings)
    raw = store.write_raw(task.id, [w.latencies_ns.tolist() for w in used])
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
        throughput_ci95=t_interval(run.per_repeat, at_least=0.0), cv=cv(run.per_repeat),
        latency=latency_summary(pooled, [w.latencies_ns for w in used]), raw_latencies=raw,
        windows=window_records(run), clean_windows=run.clean_windows, disturbed=run.disturbed,
        repeats=plan.repeats, warmup_iterations=max(t.warmup_calls for t in timings),
        warmup_seconds=max(t.warmup_ns for t in timings) / 1e9, timed_iterations=len(pooled),
        timed_seconds=sum(w.wall_ns for w in timings[0].windows) / 1e9,
        prepare_seconds=ex.prepare_seconds, memory=memory_record(run.timed),
        energy=energy_record(run.timed[0], sum(w.images for w in run.windows)),
        cold_start=cold_record(run.timed[0]), warnings=contradiction(task, ex, fidelity)
        + run.warnings(task) + environment_warnings(run), fidelity=fidelity,
        environment=run.timed[0].environment,
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
    m = record(run, task, model, store, fid)
    m.warnings += engine.environment_warnings(cfg.environment)
    return m
