"""MLPerf Inference scenarios (SingleStream, MultiStream, Server, Offline) on any engine and
precision, driven by the real LoadGen (``mlcommons-loadgen``), with its logs kept and its verdict
explained in plain words.

The system under test runs one engine session per batch size it may need (powers of two up to
``max_batch``, and MultiStream's samples per query), prepared before LoadGen starts. LoadGen's
``issue_queries`` only queues the samples; one worker thread takes everything waiting (up to
``max_batch``), runs it as the fewest prepared batches, and completes those samples from there.
The query sample library holds preprocessed images (``--data``) or seeded synthetic samples,
loaded and unloaded as LoadGen asks."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from visionbench.accuracy import Prepared, prepare_images
from visionbench.config import MLPERF_SHORT_SECONDS, RunConfig
from visionbench.engines import Engine, Precision
from visionbench.engines.base import Calibration, Session
from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import atomic_write_text
from visionbench.models.spec import ModelSpec
from visionbench.results import MlperfResult, RunStore
from visionbench.runner import Reporter, not_run, open_run

Scenario = Literal["SingleStream", "MultiStream", "Server", "Offline"]
SCENARIOS: tuple[Scenario, ...] = ("SingleStream", "MultiStream", "Server", "Offline")
#: ``--short``: MLPERF_SHORT_SECONDS long and this few queries; never compliant.
SHORT_MIN_QUERIES = 64
#: Default largest batch the system under test forms, per scenario.
DEFAULT_MAX_BATCH: dict[Scenario, int] = {"SingleStream": 1, "MultiStream": 8, "Server": 8,
                                          "Offline": 32}
#: LoadGen pre-generates queries for the minimum duration from the expected speed it is told, and
#: a run that runs out of them early is INVALID: it is told this much faster than measured
#: (Offline's expected QPS x2, SingleStream's and MultiStream's expected latency /2).
EXPECTED_MARGIN = 2.0
#: The probe before a run: per batch size, at least this many calls and seconds.
PROBE_CALLS = 5
PROBE_SECONDS = 0.5
#: --find-peak: each bisection step a run of this many seconds (or --duration, if shorter),
#: between 0 and this multiple of the throughput measured before the run.
PEAK_STEP_SECONDS = 10.0
PEAK_HEADROOM = 1.2
#: Server's default target QPS, as a share of the throughput measured before the run.
SERVER_DEFAULT_LOAD = 0.5


def loadgen() -> Any:
    try:
        import mlperf_loadgen
    except ImportError:
        raise VisionbenchError(
            "MLPerf scenarios need LoadGen: pip install 'visionbench[mlperf]'") from None
    return mlperf_loadgen


@dataclass
class Options:
    """What the user asked of LoadGen; None leaves MLPerf's ResNet-50 rule (or the probe's
    estimate, for expected speeds)."""

    scenario: Scenario
    target_qps: float | None = None  # Server: the arrival rate; Offline: expected throughput
    target_latency_ms: float | None = None  # Server's latency bound (MLPerf: 15 ms at p99)
    samples_per_query: int | None = None  # MultiStream (MLPerf: 8)
    max_batch: int | None = None
    duration_s: float | None = None  # minimum duration (MLPerf: 600 s)
    min_queries: int | None = None
    user_conf: Path | None = None
    short: bool = False
    performance_samples: int | None = None  # samples held in memory (MLPerf: 1024)
    accuracy: bool = False  # LoadGen's AccuracyOnly mode: every sample once, top-1 logged
    find_peak: bool = False  # Server: the highest target QPS that stays VALID
    peak_steps: int = 6  # bisection runs of --find-peak


@dataclass
class Probe:
    """Per prepared batch size, the median seconds of one call, timed before LoadGen starts: the
    expected latencies and throughput LoadGen asks to be told."""

    seconds: dict[int, float] = field(default_factory=dict)

    def throughput(self) -> float:
        b = max(self.seconds)
        return b / self.seconds[b]


def batch_sizes(opts: Options, samples_per_query: int) -> list[int]:
    """The batch sizes to prepare: powers of two up to the largest, and MultiStream's query size."""
    top = opts.max_batch or (samples_per_query if opts.scenario == "MultiStream"
                             else DEFAULT_MAX_BATCH[opts.scenario])
    sizes = {2 ** i for i in range(int(math.log2(top)) + 1)} | {top}
    if opts.scenario == "MultiStream":
        sizes.add(samples_per_query)
    return sorted(sizes)


def split(n: int, sizes: list[int]) -> list[int]:
    """``n`` samples as the fewest prepared batches (largest first): 13 over 1,2,4,8 -> 8,4,1."""
    out = []
    for b in sorted(sizes, reverse=True):
        while n >= b:
            out.append(b)
            n -= b
    return out


class SampleLibrary:
    """LoadGen's query sample library: ``count`` samples, of which LoadGen loads a working set."""

    def __init__(self, count: int, make: Callable[[int], np.ndarray]) -> None:
        self.count = count
        self.make = make
        self.loaded: dict[int, np.ndarray] = {}

    def load(self, indices: list[int]) -> None:
        for i in indices:
            self.loaded[i] = self.make(i)

    def unload(self, indices: list[int]) -> None:
        for i in indices:
            self.loaded.pop(i, None)


class SystemUnderTest:
    """Queues LoadGen's queries; one worker batches what is waiting and completes each sample."""

    def __init__(self, lg: Any, sessions: dict[int, Session], qsl: SampleLibrary,
                 max_batch: int, keep_top1: bool) -> None:
        self.lg, self.sessions, self.qsl, self.max_batch = lg, sessions, qsl, max_batch
        self.sizes = sorted(sessions)
        self.keep_top1 = keep_top1
        self.queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self._work, name="visionbench-sut", daemon=True)
        self.worker.start()

    def issue_queries(self, samples: list[Any]) -> None:
        for s in samples:
            self.queue.put(s)

    def flush_queries(self) -> None:
        pass  # nothing is held back: the worker runs whatever is waiting

    def stop(self) -> None:
        self.queue.put(None)
        self.worker.join()

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            start = 0
            for b in split(len(batch), self.sizes):
                self._run(batch[start: start + b])
                start += b

    def _run(self, samples: list[Any]) -> None:
        session = self.sessions[len(samples)]
        try:
            x = np.concatenate([self.qsl.loaded[s.index] for s in samples])
            logits = session.run(session.feed(x))
        except BaseException as e:
            self.error = self.error or e
            logits = None
        responses, buffers = [], []
        for i, s in enumerate(samples):
            if self.keep_top1 and logits is not None:
                buf = np.asarray([int(np.argmax(logits[i]))], dtype=np.int32)
                buffers.append(buf)
                responses.append(self.lg.QuerySampleResponse(s.id, buf.ctypes.data, buf.nbytes))
            else:
                responses.append(self.lg.QuerySampleResponse(s.id, 0, 0))
        self.lg.QuerySamplesComplete(responses)


def probe(sessions: dict[int, Session], make: Callable[[int], np.ndarray]) -> Probe:
    """The median time of one call per batch size, after one warm-up call: at least
    PROBE_CALLS calls and PROBE_SECONDS of them."""
    out = Probe()
    for b, session in sessions.items():
        x = session.feed(np.concatenate([make(i) for i in range(b)]))
        session.run(x)
        times: list[float] = []
        while len(times) < PROBE_CALLS or sum(times) < PROBE_SECONDS:
            t0 = time.perf_counter()
            session.run(x)
            times.append(time.perf_counter() - t0)
        out.seconds[b] = float(np.median(times))
    return out


def test_settings(lg: Any, opts: Options, p: Probe) -> tuple[Any, dict[str, Any]]:
    """LoadGen settings: MLPerf's ResNet-50 rules (LoadGen's own mlperf.conf), a user.conf on top,
    then the flags; what was chosen rather than given is listed."""
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, opts.scenario)
    if s.FromConfig("", "resnet50", opts.scenario, 0) != 0:
        raise VisionbenchError("LoadGen could not read its own MLPerf rules for resnet50")
    if opts.user_conf is not None and s.FromConfig(str(opts.user_conf), "resnet50",
                                                   opts.scenario, 1) != 0:
        raise VisionbenchError(f"LoadGen could not read {opts.user_conf}")
    s.mode = lg.TestMode.AccuracyOnly if opts.accuracy else lg.TestMode.PerformanceOnly
    chosen: dict[str, Any] = {}
    if opts.samples_per_query is not None:
        s.multi_stream_samples_per_query = opts.samples_per_query
    if opts.target_latency_ms is not None:
        s.server_target_latency_ns = int(opts.target_latency_ms * 1e6)
    one = p.seconds.get(1)
    margin = f"1/{EXPECTED_MARGIN:g} of the latency measured before the run, so that the queries " \
             "LoadGen generates last the minimum duration"
    if one is not None and opts.scenario == "SingleStream":
        s.single_stream_expected_latency_ns = int(one * 1e9 / EXPECTED_MARGIN)
        chosen["single_stream_expected_latency_ms"] = f"{one * 1e3 / EXPECTED_MARGIN:.3f}, {margin}"
    spq = s.multi_stream_samples_per_query
    if spq in p.seconds and opts.scenario == "MultiStream":
        s.multi_stream_expected_latency_ns = int(p.seconds[spq] * 1e9 / EXPECTED_MARGIN)
        chosen["multi_stream_expected_latency_ms"] = (f"{p.seconds[spq] * 1e3 / EXPECTED_MARGIN:.3f}, "
                                                      f"{margin}")
    if opts.scenario == "Offline":
        qps = opts.target_qps or EXPECTED_MARGIN * p.throughput()
        s.offline_expected_qps = qps
        if opts.target_qps is None:
            chosen["offline_expected_qps"] = (
                f"{qps:.1f}, {EXPECTED_MARGIN:g}x the throughput measured before the run, so that "
                "the samples LoadGen generates last the minimum duration")
    if opts.scenario == "Server":
        qps = opts.target_qps or SERVER_DEFAULT_LOAD * p.throughput()
        s.server_target_qps = qps
        if opts.target_qps is None:
            chosen["server_target_qps"] = (f"{qps:.1f}, {SERVER_DEFAULT_LOAD:.0%} of the throughput "
                                           "measured before the run (--target-qps sets it)")
    if opts.short:
        s.min_duration_ms = int(MLPERF_SHORT_SECONDS * 1000)
        s.min_query_count = 1 if opts.scenario == "Offline" else SHORT_MIN_QUERIES
    if opts.duration_s is not None:
        s.min_duration_ms = int(opts.duration_s * 1000)
    if opts.min_queries is not None:
        s.min_query_count = opts.min_queries
    if opts.performance_samples is not None:
        s.performance_sample_count_override = opts.performance_samples
    return s, chosen


def mlperf_minimums(scenario: Scenario) -> tuple[int, int]:
    """MLPerf's minimum duration (ms) and query count for ResNet-50 in this scenario, as LoadGen's
    own mlperf.conf states them."""
    lg = loadgen()
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    s.FromConfig("", "resnet50", scenario, 0)
    return s.min_duration_ms, s.min_query_count


def read_detail(path: Path, performance: bool = True) -> dict[str, Any]:
    """LoadGen's detail log (``:::MLLOG {json}`` lines) as key -> last value; a performance run's
    must hold LoadGen's verdict."""
    out: dict[str, Any] = {"errors": []}
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(":::MLLOG "):
                entry = json.loads(line[len(":::MLLOG "):])
                out[entry["key"]] = entry.get("value")
                if (entry.get("metadata") or {}).get("is_error"):
                    out["errors"].append(str(entry.get("value")))
    except (OSError, ValueError, KeyError) as e:
        raise VisionbenchError(f"cannot read LoadGen's log {path}: {e}") from e
    if performance and "result_validity" not in out:
        raise VisionbenchError(f"LoadGen's log {path} has no result (the run did not finish)")
    return out


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


#: The scenario's metric: what MLPerf reports for it.
METRICS: dict[Scenario, tuple[str, str, str]] = {
    "SingleStream": ("90th percentile latency", "result_90.00_percentile_latency_ns", "ms"),
    "MultiStream": ("99th percentile latency per query", "result_99.00_percentile_latency_ns", "ms"),
    "Server": ("scheduled queries per second", "result_scheduled_samples_per_sec", "queries/s"),
    "Offline": ("samples per second", "result_samples_per_second", "samples/s"),
}


def ran_seconds(scenario: Scenario, d: dict[str, Any]) -> float:
    """How long the timed part lasted: Offline until its last sample; Single- and MultiStream
    query after query; Server as scheduled."""
    if scenario == "Offline":
        return (d.get("result_max_latency_ns") or 0) / 1e9
    if scenario in ("SingleStream", "MultiStream"):
        return (d.get("result_query_count") or 0) * (d.get("result_mean_latency_ns") or 0) / 1e9
    return (d.get("generated_query_duration") or 0) / 1e9


def explain(scenario: Scenario, d: dict[str, Any], single_ms: float | None = None) -> list[str]:
    """Each rule LoadGen found broken, in plain words. ``single_ms``: one sample's latency
    measured before the run, to tell a bound no load can meet from one the load breaks."""
    rules = []
    advice = str(d.get("result_invalid_reason") or "").strip()
    if d.get("result_min_duration_met") is False:
        rules.append(f"min duration not met: ran {ran_seconds(scenario, d):.1f} s, needs "
                     f"{d.get('effective_min_duration_ms', 0) / 1000:.0f} s"
                     + (f" (LoadGen: {advice})" if advice else ""))
    if d.get("result_min_queries_met") is False:
        rules.append(f"min queries not met: {d.get('result_query_count')} queries, needs "
                     f"{d.get('effective_min_query_count')}")
    if d.get("result_perf_constraints_met") is False:
        target = _ms(d.get("effective_target_latency_ns"))
        pct = 100 * float(d.get("effective_target_latency_percentile") or 0.99)
        got = _ms(d.get(f"result_{pct:.2f}_percentile_latency_ns"))
        if scenario == "Server":
            fix = ("lower --target-qps" if single_ms is None or single_ms <= target else
                   f"one sample alone takes {single_ms:.1f} ms here, so no load can meet it: raise "
                   "--target-latency-ms")
            rules.append(
                f"latency bound not met: p{pct:g} {got:.1f} ms over the {target:g} ms target "
                f"({d.get('result_overlatency_query_count')} queries over); {fix}")
        else:
            rules.append("performance constraints not met: "
                         + (d.get("result_invalid_reason") or "see mlperf_log_summary.txt"))
    if d.get("early_stopping_met") is False:
        text = " ".join(str(d.get("early_stopping_result") or "").replace("*", " ").split())
        rules.append(f"early stopping not met: {text}" if text else "early stopping not met")
    rules += [f"LoadGen: {e}" for e in d.get("errors", [])]
    if d.get("result_validity") == "INVALID" and not rules:
        rules.append(advice or "INVALID; see mlperf_log_summary.txt")
    return rules


@dataclass
class Outcome:
    scenario: Scenario
    detail: dict[str, Any]
    chosen: dict[str, Any]
    probe: Probe
    batch_sizes: list[int]
    seconds: float
    top1: dict[int, int] = field(default_factory=dict)  # accuracy mode: sample index -> class


def read_accuracy_log(path: Path) -> dict[int, int]:
    """LoadGen's accuracy log: each sample's response, here its top-1 class as one int32."""
    try:
        entries = json.loads(path.read_text())
        return {int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.int32)[0])
                for e in entries}
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise VisionbenchError(f"cannot read LoadGen's accuracy log {path}: {e}") from e


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


def prepare(engine: Engine, model: ModelSpec, precision: Precision, threads: int,
            cal: Calibration, opts: Options, make: Callable[[int], np.ndarray],
            allow_emulated: bool = False) -> Sessions:
    prep = Sessions({b: engine.prepare(model, precision, threads, cal, b,
                                       allow_emulated=allow_emulated)
                     for b in batch_sizes(opts, opts.samples_per_query or 8)}, Probe())
    try:
        prep.probe = probe(prep.sessions, make)
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
    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    handles = (lg.ConstructSUT(sut.issue_queries, sut.flush_queries),
               lg.ConstructQSL(total_samples, perf, qsl.load, qsl.unload))
    t0 = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(handles[0], handles[1], settings, log)
    finally:
        sut.stop()
        lg.DestroyQSL(handles[1])
        lg.DestroySUT(handles[0])
    seconds = time.perf_counter() - t0
    if sut.error is not None:
        raise VisionbenchError(f"the engine failed during the run: {sut.error}")
    top1 = read_accuracy_log(log_dir / "mlperf_log_accuracy.json") if opts.accuracy else {}
    detail = read_detail(log_dir / "mlperf_log_detail.txt", performance=not opts.accuracy)
    return Outcome(opts.scenario, detail, chosen, prep.probe, prep.sizes, seconds, top1)


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


def _result(task: Any, opts: Options, out: Outcome, log_dir: str, images: Prepared | None,
            label_offset: int, store: RunStore) -> MlperfResult:
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
        engine=task.engine, precision=task.precision, scenario=opts.scenario,
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
        batch_sizes=out.batch_sizes,
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


def run_mlperf(cfg: RunConfig, scenarios: list[Scenario], opts: Options, reporter: Reporter,
               command: list[str]) -> RunStore:
    """One LoadGen run per scenario x engine x precision, each stored as it completes."""
    loadgen()
    if opts.user_conf is not None and not opts.user_conf.is_file():
        raise VisionbenchError(f"user.conf not found: {opts.user_conf}")
    if opts.find_peak and scenarios != ["Server"]:
        raise VisionbenchError("--find-peak searches Server's QPS: give --scenario Server alone")
    if opts.find_peak and opts.target_qps is not None:
        raise VisionbenchError("--find-peak searches the QPS: leave --target-qps out")
    if opts.accuracy and cfg.data is None:
        raise VisionbenchError("accuracy mode needs labelled images: give --data DIR")
    cfg = replace(cfg, modes=["latency"], accuracy=opts.accuracy)
    setup = open_run(cfg, reporter, command, "mlperf", extend=True)
    store, model = setup.store, setup.model
    images = prepare_images(model, setup.dataset) if setup.dataset is not None else None
    try:
        if images is not None:
            arrays = images.arrays
            total = len(arrays)

            def make(i: int) -> np.ndarray:
                return np.asarray(arrays[i % total])[None]
        else:
            total = opts.performance_samples or (256 if opts.short else 1024)

            def make(i: int) -> np.ndarray:
                rng = np.random.default_rng(cfg.seed + i)
                return rng.standard_normal(model.input_shape(1), dtype=np.float32)

        with store.recording():
            for task, opts in ((t, replace(opts, scenario=sc)) for sc in scenarios
                               for t in setup.tasks):
                why = not_run(task, cfg)
                base = {"engine": task.engine, "precision": task.precision, "scenario": opts.scenario,
                        "mode": "accuracy" if opts.accuracy else "performance"}
                if why is not None:
                    store.add_mlperf(MlperfResult(**base, status=why[0], reason=why[1]))
                    reporter.note(f"skipped {task.engine} {task.precision}: {why[1]}")
                    continue
                rel = f"mlperf/{task.engine}-{task.precision}-{opts.scenario}" + (
                    "-accuracy" if opts.accuracy else "")
                reporter.note(f"{task.engine} {task.precision} {opts.scenario}: LoadGen running")
                try:
                    prep = prepare(setup.engines[task.engine], model, task.precision, cfg.threads,
                                   setup.cal, opts, make, cfg.allow_emulated)
                    try:
                        if opts.find_peak:
                            peak, steps, out = find_peak(prep, opts, make, total, store.dir / rel,
                                                         reporter.note)
                        else:
                            out = run_loadgen(prep, opts, make, total, store.dir / rel)
                    finally:
                        prep.close()
                    if opts.find_peak and out is None:
                        r = MlperfResult(**base, status="ok", peak_steps=steps, log_dir=rel,
                                         reason=_no_peak(steps, prep.probe, opts))
                    else:
                        r = _result(task, opts, out, rel, images, model.label_offset, store)
                        if opts.find_peak:
                            r.peak_qps, r.peak_steps = peak, steps
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # an engine's failure is a result: the run goes on
                    r = MlperfResult(**base, status="failed", reason=describe(e))
                store.add_mlperf(r)
                reporter.note(f"{task.engine} {task.precision} {opts.scenario}: " + (
                    r.reason or "" if r.status != "ok" else f"{r.validity}"
                    + (f", {r.metric} {r.value:.2f} {r.unit}" if r.value is not None else "")
                    + (f", top-1 {r.top1:.2%}" if r.top1 is not None else "")))
    finally:
        if images is not None:
            images.close()
    results = store.results
    failed = any(r.status == "failed" for r in [*results.measurements, *results.mlperf])
    store.finish("failed" if failed else "complete")
    return store
