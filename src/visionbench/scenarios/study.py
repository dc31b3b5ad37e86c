"""The study (``visionbench run``) and the batch sweep: each engine x precision x mode timed in
this process or in pinned instances, each measurement stored the moment it completes."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionbench.cache import take_notes
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import Engine, Session, get_engine
from visionbench.engines.base import Execution
from visionbench.harness.instances import (
    combined_throughput,
    pinning,
    pooled_latencies,
    run_instances,
)
from visionbench.harness.timing import Progress, Timing, TimingPlan, measure, measure_async
from visionbench.models.spec import ModelSpec
from visionbench.results import InstanceResult, Measurement, RunStore, now
from visionbench.scenarios.base import (
    Reporter,
    Scenario,
    Setup,
    StartHook,
    Task,
    drive,
    layout_for,
    open_data,
    open_run,
    study_calibration,
    unmeasured,
)
from visionbench.scenarios.fidelity import FidelityCheck
from visionbench.stats import CV_WARN, cv, latency_summary
from visionbench.sysinfo import numa_cores


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


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
                      check: FidelityCheck | None = None,
                      ) -> tuple[Timing, Execution, list[np.ndarray] | None]:
    """Prepare and time ``task``; with ``check``, the session's outputs on its images after."""
    session = _prepare(task, engine, model, cfg, threads, cal, plan.batch_size)
    try:
        pool = input_pool(model, plan.batch_size, seed=cfg.study.seed + plan.batch_size)
        inputs = [session.feed(x) for x in pool]
        if ready is not None:
            ready()
        if session.requests > 1:
            timing = measure_async(session.start, session.requests, inputs, plan, progress, start)
        else:
            timing = measure(session.run, inputs, plan, progress, start)
        outputs = check.collect(session, plan.batch_size) if check is not None else None
        return timing, session.execution, outputs
    finally:
        session.close()


def _prepare(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, threads: int,
             cal: Calibration, batch: int, precision: str | None = None) -> Session:
    return engine.prepare(model, precision or task.precision, threads, cal, batch,  # type: ignore[arg-type]
                          allow_emulated=cfg.study.allow_emulated, options=cfg.options_for(engine))


def instance_main(job: InstanceJob, barrier: Callable[[], None]) -> dict[str, Any]:
    """The target each instance process runs (see ``harness.instances``)."""
    cfg = job.cfg
    cal, _ = study_calibration(cfg, job.model, open_data(cfg))
    timing, execution, _ = _prepare_and_time(job.task, get_engine(job.task.engine), job.model, cfg,
                                             job.plan, job.threads, cal, None, barrier)
    return {"timing": timing, "execution": execution, "peak_rss_mib": _peak_rss_mib(),
            "cache_notes": take_notes()}


def measure_task(
    task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, store: RunStore,
    reporter: Reporter, calibration: Calibration, start: StartHook | None = None,
    check: FidelityCheck | None = None,
) -> Measurement:
    """Time ``task`` in this process or in pinned instances; with ``check``, its outputs'
    fidelity to FP32 (an FP32 task's outputs become the reference)."""
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
    instances: list[InstanceResult] = []
    extra: dict[str, Any] = {}
    if layout is None:
        threads = cfg.launch.threads
        # FP32's outputs are the reference: taken from a measurement at a small batch (its
        # latency), made apart (a session at batch 1) before one large batch would be run.
        wanted = check is not None and (task.precision != "fp32" or (
            not check.has_reference(task.engine) and plan.batch_size <= len(check.images)))
        timing, ex, outputs = _prepare_and_time(task, engine, model, cfg, plan, threads,
                                                calibration, progress, phase("go"), phase("ready"),
                                                check if wanted else None)
        timings = [timing]
        per_repeat = [w.throughput for w in timing.windows]
        rss = _peak_rss_mib()
        cache_notes = take_notes()
    else:
        threads = cfg.launch.threads if cfg.launch.threads_explicit else layout.cores_per_instance

        def tick(seconds: float) -> None:
            if progress and plan.duration:
                progress("window", min(int(seconds // plan.duration), plan.repeats))
                progress("timed", seconds % plan.duration)

        job = InstanceJob(task, cfg, model, plan, threads)
        phase("ready")()
        done = run_instances("visionbench.scenarios.study:instance_main", [job] * layout.instances,
                             layout, nodes, tick, phase("go"))
        timings = [d.value["timing"] for d in done]
        ex = done[0].value["execution"]
        per_repeat = combined_throughput(timings)
        rss = max(d.value["peak_rss_mib"] for d in done)
        cache_notes = list(dict.fromkeys(n for d in done for n in d.value["cache_notes"]))
        for d, t in zip(done, timings, strict=True):
            instances.append(InstanceResult(
                index=d.index, cores=list(d.cores), affinity=d.affinity,
                throughput_ips=statistics.median(w.throughput for w in t.windows),
                throughput_per_repeat=[w.throughput for w in t.windows],
                latency=latency_summary(np.concatenate([w.latencies_ns for w in t.windows])),
            ))
        extra = {"instances": layout.instances, "cores_per_instance": layout.cores_per_instance,
                 "layout": layout.name, "layout_reason": layout.reason,
                 "pinning": pinning(nodes), "per_instance": instances}
    fid = None
    if check is not None:
        if layout is not None:  # the instances' sessions are gone: one made here if needed
            outputs = None

        def session(precision: str | None = None) -> Session:
            return _prepare(task, engine, model, cfg, cfg.launch.threads, calibration, 1, precision)

        if task.precision == "fp32":
            if outputs is not None:
                check.keep_reference(task.engine, outputs)
        else:
            fid = check.judge(engine, outputs, session, lambda: session("fp32"))
    emulated = task.support.status == "emulated"
    spread = cv(per_repeat)
    pooled = pooled_latencies(timings)
    windows = [w for t in timings for w in t.windows]
    warnings: list[str] = cache_notes
    if ex.executed_precision != task.precision:
        warnings.append(f"asked for {task.precision}, {task.engine} executed "
                        f"{ex.executed_precision} ({ex.layer_precisions})")
    if task.support.reason:
        warnings.append(task.support.reason)
    if layout is not None:
        warnings.append(f"{layout.describe()} (instances x cores, {layout.name} layout: "
                        f"{layout.reason}); throughput is the instances' sum, latency pooled")
    if spread is not None and spread > CV_WARN:
        warnings.append(
            f"unstable: throughput varies {spread:.1%} between repeats (over {CV_WARN:.0%}); "
            "close other programs, raise --duration or --repeats"
        )
    raw = store.write_raw(task.id, [w.latencies_ns.tolist() for w in windows])
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        model=model.name, method=task.method, engine_method=task.same or None,
        batch_size=plan.batch_size, threads=threads, status="ok",
        support=task.support.status, executed_precision=ex.executed_precision,
        emulated=emulated, layer_precisions=ex.layer_precisions, quantized_ops=ex.quantized_ops,
        engine_details=ex.details, throughput_ips=statistics.median(per_repeat),
        throughput_per_repeat=per_repeat,
        cv=spread, latency=latency_summary(pooled), raw_latencies=raw,
        repeats=plan.repeats, warmup_iterations=max(t.warmup_calls for t in timings),
        warmup_seconds=max(t.warmup_ns for t in timings) / 1e9, timed_iterations=len(pooled),
        timed_seconds=sum(w.wall_ns for w in timings[0].windows) / 1e9,
        prepare_seconds=ex.prepare_seconds, peak_rss_mib=rss, warnings=warnings, fidelity=fid,
        released_at=released[0] if released else None,
        started_at=started, finished_at=now(), **extra,
    )


class Study(Scenario[Measurement]):
    """Each planned task timed (``measure_task``); a fleet node passes its barrier as ``start``."""

    def __init__(self, start: StartHook | None = None) -> None:
        self.start = start
        self.checks: dict[str, FidelityCheck] = {}

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> Measurement:
        return unmeasured(task, setup.cfg, reason, status)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> Measurement:
        engine = setup.engines[task.engine]
        check = self.checks.get(setup.model.name)
        if check is None:
            check = self.checks[setup.model.name] = FidelityCheck(setup.model, setup.dataset,
                                                                  setup.cfg.study.seed)
        return measure_task(task, engine, setup.model,
                            setup.cfg.for_method(engine, task.method, task.mode, task.precision),
                            setup.store, reporter, setup.cal, self.start, check)

    def add(self, setup: Setup, record: Measurement, reporter: Reporter) -> None:
        setup.store.add(record)
        reporter.done(record)


def run(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    """Check everything, then measure each task, storing each measurement as it completes."""
    *_, store = run_steps(cfg, reporter, command)
    return store


def run_steps(cfg: RunConfig, reporter: Reporter, command: list[str],
              start: StartHook | None = None, node: dict[str, Any] | None = None,
              ) -> Iterator[RunStore]:
    """``run``, yielding the store each time a measurement is stored and once when finished (a
    fleet node sends its results on as they come). With ``accuracy``, accuracy follows."""
    from visionbench.scenarios.accuracy import AccuracyScenario

    scenarios: list[Scenario[Any]] = [Study(start)]
    if cfg.study.accuracy:
        scenarios.append(AccuracyScenario())
    setup = open_run(cfg, reporter, command, "sweep" if cfg.study.batch_sizes else "study",
                     scenarios, node=node)
    yield from drive(setup, scenarios, reporter)
