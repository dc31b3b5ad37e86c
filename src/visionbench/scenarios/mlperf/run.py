"""MLPerf Inference scenarios (SingleStream, MultiStream, Server, Offline) on any engine and
precision, driven by the real LoadGen (``mlcommons-loadgen``), with its logs kept and its verdict
explained in plain words.

The system under test (``sut``) runs one engine session per batch size it may need (powers of two
up to ``max_batch``, and MultiStream's samples per query), prepared before LoadGen starts; the
sample library (``library``) holds preprocessed images (``--data``) or seeded synthetic samples;
the settings (``settings``) are MLPerf's rules, a user.conf and the flags; ``logs`` reads LoadGen's
verdict back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.config import RunConfig
from visionbench.data.prepared import Prepared, prepare_images
from visionbench.engines import Engine, SessionSpec
from visionbench.engines.base import Session
from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_text, own_dir
from visionbench.reporter import Reporter
from visionbench.results import MlperfResult, RunStore
from visionbench.results.schema import mlperf_key
from visionbench.scenarios.driver import open_run, run_scenarios
from visionbench.scenarios.mlperf.library import SampleLibrary
from visionbench.scenarios.mlperf.logs import (
    METRICS,
    _ms,
    explain,
    read_accuracy_log,
    read_detail,
    start_test,
)
from visionbench.scenarios.mlperf.settings import (
    PEAK_STEP_SECONDS,
    LoadgenScenario,
    Options,
    batch_sizes,
    check_user_conf,
    loadgen,
    mlperf_minimums,
    test_settings,
)
from visionbench.scenarios.mlperf.sut import Probe, SystemUnderTest, probe
from visionbench.scenarios.scenario import Scenario, Setup, Skip, Task

#: --find-peak: each bisection step between 0 and this multiple of the throughput measured
#: before the run.
PEAK_HEADROOM = 1.2


@dataclass
class Outcome:
    scenario: LoadgenScenario
    detail: dict[str, Any]
    chosen: dict[str, Any]
    probe: Probe
    batch_sizes: list[int]
    seconds: float
    top1: dict[int, int] = field(default_factory=dict)  # accuracy mode: sample index -> class
    requests: int = 1  # kept in flight on each session


@dataclass
class Sessions:
    """An engine's sessions for one scenario, and how fast they ran before LoadGen started."""

    sessions: dict[int, Session]
    probe: Probe

    @property
    def sizes(self) -> list[int]:
        return sorted(self.sessions)

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


def prepare(engine: Engine, spec: Callable[[int], SessionSpec], opts: Options,
            make: Callable[[int], np.ndarray]) -> Sessions:
    """A session per batch size the system under test may form (``spec(batch)``: what each is
    prepared for), and the probe of how fast each runs."""
    prep = Sessions({}, Probe())
    try:
        for b in batch_sizes(opts, opts.samples_per_query or 8):
            prep.sessions[b] = engine.prepare(spec(b))
        prep.probe = probe(prep.sessions, make, in_flight=not opts.accuracy)
    except BaseException:
        prep.close()
        raise
    return prep


def run_loadgen(prep: Sessions, opts: Options, make: Callable[[int], np.ndarray],
                total_samples: int, log_dir: Path) -> Outcome:
    """One LoadGen test over prepared sessions; its verdict read back from its log."""
    lg = loadgen()
    settings, chosen = test_settings(lg, opts, prep.probe)
    perf = min(total_samples, settings.performance_sample_count_override or 1024)
    qsl = SampleLibrary(total_samples, make)
    sut = SystemUnderTest(lg, prep.sessions, qsl, max(prep.sizes), keep_top1=opts.accuracy)
    requests = sut.requests(prep.sessions[max(prep.sizes)])
    t0 = time.perf_counter()
    try:
        start_test(lg, (sut.issue_queries, sut.flush_queries),
                   (total_samples, perf, qsl.load, qsl.unload), settings, log_dir)
    finally:
        sut.stop()
    seconds = time.perf_counter() - t0
    if sut.error is not None:
        raise VisionbenchError(f"the engine failed during the run: {sut.error}")
    top1 = read_accuracy_log(log_dir / "mlperf_log_accuracy.json") if opts.accuracy else {}
    detail = read_detail(log_dir / "mlperf_log_detail.txt", performance=not opts.accuracy)
    return Outcome(opts.scenario, detail, chosen, prep.probe, prep.sizes, seconds, top1, requests)


def find_peak(prep: Sessions, opts: Options, make: Callable[[int], np.ndarray],
              total_samples: int, log_dir: Path, note: Callable[[str], None],
              ) -> tuple[float | None, list[dict[str, Any]], Outcome | None]:
    """The highest Server QPS that keeps the latency bound: bisection between 0 and 1.2x the
    throughput measured before the run, over short runs judged by the latency bound alone (a
    short run cannot meet MLPerf's minimum duration or early stopping), then one run at the
    peak with the full settings, judged by every rule."""
    lo, hi = 0.0, PEAK_HEADROOM * prep.probe.throughput()
    steps: list[dict[str, Any]] = []
    bound_ms = test_settings(loadgen(), opts, prep.probe)[0].server_target_latency_ns / 1e6
    single_ms = prep.probe.seconds[1] * 1e3
    if single_ms > bound_ms:
        note(f"  find-peak: one sample alone takes {single_ms:.1f} ms, over the {bound_ms:g} ms bound")
        return None, steps, None
    seconds = min(PEAK_STEP_SECONDS, opts.duration_s or PEAK_STEP_SECONDS)
    for i in range(opts.peak_steps):
        qps = (lo + hi) / 2
        step = replace(opts, target_qps=qps, duration_s=seconds, min_queries=1, short=False)
        d = run_loadgen(prep, step, make, total_samples, log_dir / f"peak-step-{i + 1}").detail
        met = bool(d.get("result_perf_constraints_met"))
        steps.append({"qps": round(qps, 3), "latency_bound_met": met,
                      "p99_ms": _ms(d.get("result_99.00_percentile_latency_ns"))})
        note(f"  find-peak step {i + 1}/{opts.peak_steps}: {qps:.2f} QPS, latency bound "
             + ("met" if met else "not met"))
        lo, hi = (qps, hi) if met else (lo, qps)
    if lo == 0.0:
        return None, steps, None
    return lo, steps, run_loadgen(prep, replace(opts, target_qps=lo), make, total_samples,
                                  log_dir)


def _result(task: Task, opts: Options, out: Outcome, log_dir: str, images: Prepared | None,
            label_offset: int, store: RunStore, details: dict[str, Any]) -> MlperfResult:
    d = out.detail
    name, key, unit = METRICS[opts.scenario]
    if opts.find_peak:
        name = "peak scheduled queries per second (find-peak)"
    value = d.get(key)
    if unit == "ms":
        value = _ms(value)
    rules = mlperf_minimums(opts.scenario)
    kept = ((d.get("effective_min_duration_ms") or 0) >= rules[0]
            and (d.get("effective_min_query_count") or 0) >= rules[1])
    top1, predictions = None, None
    if out.top1 and images is not None:
        classes = {i: c - label_offset for i, c in sorted(out.top1.items())}
        if images.labels is not None:
            top1 = float(np.mean([c == images.labels[i] for i, c in classes.items()]))
        predictions = f"raw/mlperf-accuracy-{task.engine}-{task.precision}.json"
        atomic_write_text(store.dir / predictions, json.dumps(
            {"top1": {str(images.paths[i]): c for i, c in classes.items()}}))
    return MlperfResult(
        engine=task.engine, precision=task.precision, scenario=opts.scenario, method=task.method,
        mode="accuracy" if opts.accuracy else "performance", status="ok",
        validity=None if opts.accuracy else d.get("result_validity"),
        compliant=None if opts.accuracy else kept,
        failed_rules=[] if opts.accuracy else explain(
            opts.scenario, d, out.probe.seconds[1] * 1e3 if 1 in out.probe.seconds else None),
        metric=None if opts.accuracy else name, value=None if opts.accuracy else value,
        unit=None if opts.accuracy else unit,
        latency_ms={k.split("_")[1].rstrip("0").rstrip("."): _ms(v) for k, v in d.items()
                    if k.startswith("result_") and k.endswith("_percentile_latency_ns")},
        queries=d.get("result_query_count"), samples_per_query=d.get("effective_samples_per_query"),
        target_qps=d.get("effective_target_qps"),
        target_latency_ms=_ms(d.get("effective_target_latency_ns")),
        min_duration_s=(d.get("effective_min_duration_ms") or 0) / 1000,
        min_queries=d.get("effective_min_query_count"), chosen=out.chosen,
        batch_sizes=out.batch_sizes, requests_in_flight=out.requests, engine_details=details,
        probe_ms={str(b): round(t * 1e3, 3) for b, t in out.probe.seconds.items()},
        top1=top1, samples=len(out.top1) or None, predictions=predictions,
        seconds=round(out.seconds, 1), log_dir=log_dir,
    )


def _no_peak(steps: list[dict[str, Any]], p: Probe, opts: Options) -> str:
    bound = test_settings(loadgen(), opts, p)[0].server_target_latency_ns / 1e6
    if not steps:
        return (f"no QPS can keep the {bound:g} ms bound: one sample alone takes "
                f"{p.seconds[1] * 1e3:.1f} ms here (raise --target-latency-ms)")
    return (f"no QPS kept the {bound:g} ms bound; the lowest tried, {steps[-1]['qps']:.3g} QPS, "
            f"had p99 {steps[-1]['p99_ms']:.1f} ms")


class Mlperf(Scenario[MlperfResult]):
    """One LoadGen run per scenario x engine x precision."""

    def __init__(self, scenarios: list[LoadgenScenario], opts: Options) -> None:
        self.scenarios, self.opts = scenarios, opts
        self.images: Prepared | None = None
        #: The sample library's size and maker, set when the tasks are planned.
        self.total = 0
        self.make: Callable[[int], np.ndarray]

    def tasks(self, setup: Setup, reporter: Reporter) -> Sequence[Task]:
        cfg, model = setup.cfg, setup.model
        if setup.dataset is not None:
            self.images = prepare_images(model, setup.dataset)
            arrays = self.images.arrays
            total = self.total = len(arrays)

            def make(i: int) -> np.ndarray:
                return np.asarray(arrays[i % total])[None]
        else:
            self.total = self.opts.performance_samples or (256 if self.opts.short else 1024)

            def make(i: int) -> np.ndarray:
                rng = np.random.default_rng(cfg.study.seed + i)
                return rng.standard_normal(model.input_shape(1), dtype=np.float32)
        self.make = make
        return self._tasks(cfg, setup.tasks)

    def _tasks(self, cfg: RunConfig, planned: Sequence[Task]) -> list[Task]:
        """Per scenario, each engine and precision planned, in each method asked for; the
        scenario's mode is SingleStream's latency, the others' throughput."""
        pairs = {(t.engine, t.precision): t for t in planned}.values()
        return [replace(t, tag=sc, mode="latency" if sc == "SingleStream" else "throughput",
                        method=m)
                for sc in self.scenarios for t in pairs for m in cfg.study.methods]

    def describe(self, task: Task) -> str:
        return f"{task.engine} {task.precision} {task.tag}" + (
            "" if task.method == "reference" else f" ({task.method} method)")

    def key(self, task: Task) -> str:
        return mlperf_key(task.engine, task.precision, task.tag, task.method)

    def keys(self, cfg: RunConfig, tasks: list[Task]) -> list[str]:
        return [self.key(t) for t in self._tasks(cfg, tasks)]

    def _opts(self, task: Task) -> Options:
        """The options of a task: its tag is its scenario."""
        return replace(self.opts, scenario=task.tag)  # type: ignore[arg-type]

    def _base(self, task: Task) -> dict[str, Any]:
        opts = self._opts(task)
        return {"engine": task.engine, "precision": task.precision, "scenario": opts.scenario,
                "method": task.method, "mode": "accuracy" if opts.accuracy else "performance"}

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> MlperfResult:
        return MlperfResult(**self._base(task), status=status, reason=reason)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> MlperfResult:
        opts, store, model, cfg = self._opts(task), setup.store, setup.model, setup.cfg
        rel = f"mlperf/{task.engine}-{task.precision}-{opts.scenario}" + (
            "-accuracy" if opts.accuracy else "")
        engine = setup.engines[task.engine]
        own, why = engine.own_method(task.mode, task.precision, cfg.launch.threads)
        if task.method == "engine" and own is None:
            raise Skip(f"the engine method is the reference one for {opts.scenario}: {why}")
        rel += "" if task.method == "reference" else f"-{task.method}"
        cfg = cfg.for_method(engine, task.method, task.mode, task.precision)
        reporter.note(f"{self.describe(task)}: LoadGen running")
        prep = prepare(engine, lambda b: cfg.spec(engine, model, task.precision, b, setup.cal),
                       opts, self.make)
        details = dict(prep.sessions[max(prep.sizes)].execution.details)
        try:
            log_dir = own_dir(own_dir(store.dir / "mlperf") / rel.split("/", 1)[1])
            if opts.find_peak:
                peak, steps, out = find_peak(prep, opts, self.make, self.total, log_dir,
                                             reporter.note)
            else:
                out = run_loadgen(prep, opts, self.make, self.total, log_dir)
        finally:
            prep.close()
        if opts.find_peak and out is None:
            return MlperfResult(**self._base(task), status="ok", peak_steps=steps, log_dir=rel,
                                reason=_no_peak(steps, prep.probe, opts))
        r = _result(task, opts, out, rel, self.images, model.label_offset, store, details)
        if opts.find_peak:
            r.peak_qps, r.peak_steps = peak, steps
        return r

    def add(self, setup: Setup, record: MlperfResult, reporter: Reporter) -> None:
        setup.store.add(record)
        r = record
        if r.status == "ok":
            reporter.note(f"{r.engine} {r.precision} {r.scenario}: " + (r.reason or f"{r.validity}"
                          + (f", {r.metric} {r.value:.2f} {r.unit}" if r.value is not None else "")
                          + (f", top-1 {r.top1:.2%}" if r.top1 is not None else "")))

    def close(self) -> None:
        if self.images is not None:
            self.images.close()


def run_mlperf(cfg: RunConfig, scenarios: list[LoadgenScenario], opts: Options, reporter: Reporter,
               command: list[str]) -> RunStore:
    """One LoadGen run per scenario x engine x precision, each stored as it completes."""
    loadgen()
    if opts.user_conf is not None:
        check_user_conf(opts.user_conf)
    if opts.find_peak and scenarios != ["Server"]:
        raise VisionbenchError("--find-peak searches Server's QPS: give --scenario Server alone")
    if opts.find_peak and opts.target_qps is not None:
        raise VisionbenchError("--find-peak searches the QPS: leave --target-qps out")
    if opts.accuracy and cfg.inputs.data is None:
        raise VisionbenchError("accuracy mode needs labelled images: give --data DIR")
    if cfg.existing == "resume":
        raise VisionbenchError(
            "an mlperf run is not resumed: run the scenarios it lacks again with visionbench "
            "mlperf --output DIR, which joins the run")
    # LoadGen's results join a run already there (a study's), as --append does.
    cfg = cfg.replace(modes=["latency"], accuracy=opts.accuracy,
                      existing="append" if cfg.existing == "refuse" else cfg.existing)
    sut = [Mlperf(scenarios, opts)]
    return run_scenarios(open_run(cfg, reporter, command, "mlperf", sut), sut, reporter)
