"""The engine interface: capability check, metadata, and prepare(model, precision) -> Session.

An engine never prints, plots, times or writes results; the harness never imports an engine.
"""

from __future__ import annotations

import importlib.util
import json
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from visionbench.data.calibration import Calibration
from visionbench.errors import VisionbenchError
from visionbench.launch.environment import Environment
from visionbench.models import definition_missing
from visionbench.models.registry import Definition
from visionbench.models.spec import ModelSpec
from visionbench.settings import Precision
from visionbench.sysinfo import BF16_FLAGS, VNNI_FLAGS, CpuFeatures

SupportStatus = Literal["native", "emulated", "unsupported"]


@dataclass(frozen=True)
class Support:
    """Whether an engine runs a precision on this CPU: natively, only emulated, or not at all."""

    status: SupportStatus
    reason: str = ""


@dataclass(frozen=True)
class EngineOption:
    """An option an engine declares, with its own check, in the engine's own file; the command
    line makes a flag of it (``--name-with-dashes``), the API a keyword, and a run records it in
    its configuration. An engine that does not declare an option refuses it by name."""

    name: str
    help: str
    #: Allowed values of a text option; an option without choices takes a positive integer.
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise VisionbenchError(f"unknown {self.flag[2:]} '{value}'; choose from "
                                   f"{', '.join(self.choices)}")
        if not self.choices and (isinstance(value, bool) or not isinstance(value, int)
                                 or value <= 0):
            raise VisionbenchError(f"{self.flag} must be a positive integer, got {value}")


@dataclass(frozen=True)
class SessionSpec:
    """What one session is prepared for, built once by the configuration (``RunConfig.spec``) and
    handed whole to ``Engine.prepare``: every scenario prepares through it, so an engine option
    given on the command line reaches every command."""

    model: ModelSpec
    precision: Precision
    threads: int
    calibration: Calibration
    batch: int
    #: The values of the engine's own ``options`` the user gave (the others keep its defaults).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Prepared with the engine's profiler on, for ``Session.profile`` (never for timed calls:
    #: a profiler costs time of its own).
    profiling: bool = False

    def option(self, name: str) -> Any:
        return self.options.get(name)


@dataclass(frozen=True)
class Concurrency:
    """What an engine ran at once, read back: its parallel executors (OpenVINO's streams,
    concurrent sessions) and the batches kept in flight on them, with the engine's own words for
    them ("2 streams, 4 requests"; "" for one synchronous call). The report and tune read these,
    never an engine's option names."""

    executors: int = 1
    in_flight: int = 1
    text: str = ""


@dataclass(frozen=True)
class Variant:
    """A configuration of the engine's own concurrency that tune explores (``Engine.search_space``):
    the options that make it, a short tag for measurement ids ("s2-r4"), and the concurrency it
    is expected to run (to tell it apart from what the engine chose by itself)."""

    options: tuple[tuple[str, Any], ...]
    tag: str
    concurrency: Concurrency


@dataclass
class Execution:
    """What really ran, read back from the engine after preparing the model."""

    executed_precision: str
    layer_precisions: dict[str, int] = field(default_factory=dict)
    quantized_ops: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    concurrency: Concurrency = field(default_factory=Concurrency)
    prepare_seconds: float = 0.0
    #: Of ``prepare_seconds``, the model file read into the engine, where the engine tells it
    #: apart (None: read, optimised and compiled in one call).
    read_seconds: float | None = None


@dataclass(frozen=True)
class OpTime:
    """One operation of the graph the engine executed, as its profiler names it."""

    name: str
    op_type: str
    #: Milliseconds per call: the median over the profiled calls (robust to a call the OS
    #: preempted), or their mean where the profiler keeps only that (OpenVINO).
    ms: float
    #: fp32, bf16 or int8 where the engine says what it computed in, else "".
    precision: str = ""
    #: The engine's kernel or primitive (OpenVINO: brgconv_avx512_1x1_I8; ONNX Runtime: its
    #: execution provider).
    kernel: str = ""
    #: Arithmetic operations of one call (``models.flops.op_flops``, or the profiler's own
    #: count), where the engine gives the shapes it ran; None otherwise.
    flops: float | None = None
    #: Bytes the operation reads and writes at the least (its inputs, weights and outputs once),
    #: where the engine gives them: with ``flops``, its place on the roofline.
    bytes: float | None = None


@dataclass
class OpProfile:
    """Per-operation times of ``calls`` synchronous calls, from the engine's own profiler, and the
    files it gives (a trace, an executed graph: name -> bytes, for the run directory)."""

    ops: list[OpTime]
    #: Each profiled call's latency in ms, timed around the call as the unprofiled ones are.
    call_ms: list[float]
    #: Each profiled call's operations summed (ms), paired with ``call_ms``: how much of that
    #: very call the profiler placed (a sum of per-operation medians is not one call's). None
    #: where the profiler gives each operation's mean over the calls only.
    ops_per_call_ms: list[float] | None
    source: str
    files: dict[str, bytes] = field(default_factory=dict)
    #: How finely the profiler reports one operation's time (ms): each may be that much off.
    resolution_ms: float = 0.0
    #: Where the operations' ``flops`` come from, where any has them.
    flops_from: str = ""


class Session(ABC):
    """A model prepared for one precision, ready to run batches: one synchronous call at a time
    (``run``), or, where the engine was asked for several requests, ``requests`` asynchronous
    requests in flight (``start``)."""

    execution: Execution
    #: Requests the harness keeps in flight through ``start``; 1: synchronous calls to ``run``.
    requests: int = 1

    def feed(self, batch: np.ndarray) -> Any:
        """An input batch (numpy, in the model's layout) as ``run`` takes it. The harness calls
        this before timing: a layout change or a copy into the engine's tensors is not inference."""
        return batch

    @abstractmethod
    def run(self, batch: Any) -> np.ndarray:
        """Run one fed batch (the whole model: every output computed) and return its primary
        output (a classifier's logits) as a numpy array."""

    def start(self, slot: int, batch: Any, done: Callable[[], None]) -> None:
        """Start a fed batch on request ``slot`` (0 to ``requests`` - 1, never one still running)
        and return at once; ``done`` is called, from any thread, when it has completed."""
        raise NotImplementedError(f"{type(self).__name__} runs one synchronous call at a time")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``run(feed(batch))``: logits for a numpy batch, for checks outside the timed loop."""
        return self.run(self.feed(batch))

    def outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for a numpy batch, in the model's order (outside the timed
        loop: fidelity to FP32 compares them all)."""
        return self.run_outputs(self.feed(batch))

    def run_outputs(self, batch: Any) -> list[np.ndarray]:
        """Every output of one fed batch, in the model's order (the whole pipeline
        post-processes a detector's boxes and scores); an engine that returns its primary output
        only gives that."""
        return [self.run(batch)]

    def run_on(self, slot: int, batch: Any) -> list[np.ndarray]:
        """Every output of one fed batch, run synchronously on request ``slot`` (0 to
        ``requests`` - 1) from any thread: calls on different slots may run at once (a server's
        requests, each on a thread of its own)."""
        if slot != 0:
            raise NotImplementedError(f"{type(self).__name__} has one request")
        return self.run_outputs(batch)

    def profile(self, batch: Any, calls: int, warmup: int) -> OpProfile:
        """``calls`` synchronous calls of a fed batch after ``warmup`` untimed ones, with the
        engine's per-operation times (a session prepared with ``SessionSpec.profiling``)."""
        raise NotImplementedError(f"{type(self).__name__} gives no per-operation profile")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources."""


#: The environment knobs tune tries on every engine, one at a time, by name: the allocators.
ALLOCATOR_KNOBS = {"allocator=tcmalloc": Environment("tcmalloc"),
                   "allocator=jemalloc": Environment("jemalloc")}
#: ... and on an engine whose inference runs on OpenMP: Intel's runtime (preloaded, it serves
#: the GNU entry points the engine calls) with the reference scripts' settings, and GNU libgomp's
#: wait policy (libgomp reads no KMP_ variable).
OPENMP_KNOBS = {
    "omp-runtime=intel": Environment(omp_runtime="intel"),
    "KMP_BLOCKTIME=1": Environment(omp_runtime="intel", env=(("KMP_BLOCKTIME", "1"),)),
    "KMP_AFFINITY=granularity=fine,compact,1,0": Environment(
        omp_runtime="intel", env=(("KMP_AFFINITY", "granularity=fine,compact,1,0"),)),
    "OMP_WAIT_POLICY=PASSIVE": Environment(env=(("OMP_WAIT_POLICY", "PASSIVE"),)),
    "OMP_WAIT_POLICY=ACTIVE": Environment(env=(("OMP_WAIT_POLICY", "ACTIVE"),)),
}
#: What an environment knob measured on an engine: it acts, it does nothing (tune does not
#: search it there), the engine fails under it (never searched, refused when asked), or not
#: measured yet (searched).
KnobVerdict = Literal["acts", "nothing", "breaks", "unmeasured"]
#: Where and how the engines' environment verdicts were measured (benchmarks/environment.py;
#: the table is in docs/measurements.md).
ENVIRONMENT_MEASURED = ("AMD EPYC family 25 model 17 (Zen 4), 2026-12-05, "
                        "benchmarks/environment.py, ResNet-50 FP32, 3 alternating rounds")


class Engine(ABC):
    name: ClassVar[str]
    #: The Python module whose presence means the engine is installed.
    module: ClassVar[str]
    #: pip extra that installs it.
    extra: ClassVar[str]
    #: Model formats it runs (``ModelSpec.format``).
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    #: The options it takes besides threads (the scenarios refuse the others for it).
    options: ClassVar[tuple[EngineOption, ...]] = ()
    #: What it runs of an ONNX model: the graph itself, or the model rebuilt in its framework.
    definition: ClassVar[Definition] = "onnx"
    #: The threads its inference runs on, as read in a process that ran it (the libraries
    #: mapped and serving OpenMP's entry points, docs/method.md): "openmp" (its wheel's OpenMP
    #: runtime), "tbb" or "own" (a thread pool of its own); and the evidence.
    threading: ClassVar[tuple[str, str]] = ("own", "")
    #: The environment knobs measured on it (benchmarks/environment.py, alternating rounds):
    #: knob name (``ALLOCATOR_KNOBS``, ``OPENMP_KNOBS``) -> (verdict, the measurement). A knob
    #: not listed is unmeasured.
    environment_knobs: ClassVar[Mapping[str, tuple[KnobVerdict, str]]] = {}

    @classmethod
    def installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    def cannot_run(self, model: ModelSpec) -> str | None:
        """Why this engine cannot run ``model`` at all (its format, or no definition of it in the
        engine's framework), or None."""
        if model.format not in self.formats:
            return (f"{self.name} runs {' and '.join(self.formats)} models; {model.path.name} is a "
                    f"{model.format} model")
        return definition_missing(model, self.definition) if model.format == "onnx" else None

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Versions of the engine and the libraries it uses (e.g. its quantizer)."""

    @abstractmethod
    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        """Whether this engine runs ``precision`` natively on a CPU with these features."""

    @abstractmethod
    def prepare(self, spec: SessionSpec) -> Session:
        """Compile ``spec.model`` for ``spec.precision`` and ``spec.batch`` on ``spec.threads``
        with the engine's ``spec.options``; INT8 quantizes first (cached). An engine never runs
        another precision than the one asked: ``Execution`` says what really ran."""

    def search_space(self, precision: Precision, threads: int) -> list[Variant]:
        """The configurations of the engine's own concurrency that tune explores around a batch
        size at ``precision`` on ``threads`` (none: tune explores batch sizes, instances and the
        methods only)."""
        return []

    def environment_candidates(self) -> dict[str, Environment]:
        """The environment knobs that can act on it: the allocators, and OpenMP's where its
        inference runs on OpenMP."""
        return {**ALLOCATOR_KNOBS, **(OPENMP_KNOBS if self.threading[0] == "openmp" else {})}

    def environments(self) -> dict[str, Environment]:
        """The environment variants tune tries (one knob each), by knob name: the candidates
        less every knob measured to do nothing on this engine."""
        return {k: e for k, e in self.environment_candidates().items()
                if self.environment_knobs.get(k, ("unmeasured", ""))[0] not in ("nothing", "breaks")}

    def environment_problem(self, env: Environment) -> str | None:
        """Why this engine cannot run under ``env`` (an allocator it was measured to fail
        under), or None."""
        for name, knob in ALLOCATOR_KNOBS.items():
            verdict, evidence = self.environment_knobs.get(name, ("unmeasured", ""))
            if verdict == "breaks" and env.allocator == knob.allocator:
                return f"{self.name} fails under {name} here: {evidence}"
        return None

    def environment_warnings(self, env: Environment) -> list[str]:
        """What a measurement under ``env`` must tell: a knob that does nothing on this engine."""
        out = []
        if env.omp_runtime == "intel" and self.threading[0] != "openmp":
            out.append(f"--omp-runtime intel does nothing on {self.name}: its inference does not "
                       f"run on OpenMP ({self.threading[1]})")
        for name in (n for n, e in ALLOCATOR_KNOBS.items() if e.allocator == env.allocator):
            verdict, evidence = self.environment_knobs.get(name, ("unmeasured", ""))
            if verdict == "nothing":
                out.append(f"{name} measured to do nothing on {self.name}: {evidence}")
        return out

    def batch_problem(self, options: Mapping[str, Any], batch: int) -> str | None:
        """Why ``options`` cannot run a batch of ``batch`` images (checked before a run), or None."""
        return None

    def own_method(self, mode: str, precision: Precision, threads: int
                   ) -> tuple[dict[str, Any] | None, str]:
        """The engine's own configuration for ``mode`` ("throughput" or "latency") and precision
        on ``threads``, as its own benchmark tool runs it, or its best known here: the options
        that make it (the study's "engine" method), or None and why the study's reference method
        already is it (the method then is not measured twice)."""
        return None, (f"{self.name} has no configuration of its own for {mode} known to measure "
                      "faster here than one process, one synchronous call on all threads")


#: Data-type names that OpenVINO and oneDNN report, by the precision each means.
DTYPE_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8", "s8": "int8"}


def by_precision(kernels: Mapping[str, int]) -> Counter[str]:
    """Counts of kernels keyed ``kind:dtype[:implementation]``, summed by precision."""
    out: Counter[str] = Counter()
    for key, n in kernels.items():
        dtype = key.split(":")[1]
        out[DTYPE_PRECISION.get(dtype, dtype)] += n
    return out


def op_times(kinds: Mapping[str, tuple[str, str]], times: Mapping[str, list[float]], calls: int,
             precision: Callable[[str, str], str],
             costs: Mapping[str, tuple[float | None, float | None]] | None = None
             ) -> list[OpTime]:
    """The operations a profiler reported, in its order: ``kinds`` (name -> type, kernel), each
    one's times in ms over ``calls`` calls (their median; a call it did not run in counts 0),
    ``precision`` (name, type) -> what it computed in, ``costs`` name -> (FLOPs, bytes)."""
    costs = costs or {}
    return [OpTime(name, kind, float(np.median(times[name] + [0.0] * (calls - len(times[name])))),
                   precision(name, kind), kernel, *costs.get(name, (None, None)))
            for name, (kind, kernel) in kinds.items()]


def laid_end_to_end(ops: list[OpTime], source: str, statistic: str) -> bytes:
    """A Chrome/Perfetto trace (JSON) of ``ops``' times (their ``statistic`` per call) laid end
    to end in their order, for a profiler that gives durations but no start times."""
    events, t = [], 0.0
    for op in ops:
        events.append({"name": op.name, "cat": op.op_type, "ph": "X", "pid": 0, "tid": 0,
                       "ts": round(t, 3), "dur": round(op.ms * 1e3, 3),
                       "args": {"kernel": op.kernel, "precision": op.precision}})
        t += op.ms * 1e3
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {
        "source": f"{source}: each operation's {statistic} per call, laid end to end in execution "
                  "order (no start times given)"}}).encode()


def dominant_precision(counts: Counter[str]) -> str:
    """The precision most compute kernels ran at: what the engine really executed."""
    return counts.most_common(1)[0][0] if counts else "unknown"


def cpu_support(precision: Precision, cpu: CpuFeatures) -> Support:
    """The CPU side of a capability check, shared by engines that run on oneDNN-like kernels."""
    if precision == "bf16" and not cpu.bf16:
        return Support(
            "emulated", f"this CPU has no native BF16 ({' or '.join(BF16_FLAGS)} missing)"
        )
    if precision == "int8" and not cpu.vnni:
        return Support(
            "native",
            f"INT8 runs without VNNI ({', '.join(VNNI_FLAGS)} missing): slower int8 kernels",
        )
    return Support("native")


def _sessions(n: int) -> Concurrency:
    """``n`` concurrent sessions, each running one batch at a time."""
    return Concurrency(n, n, f"{n} sessions")


def session_variants(threads: int) -> list[Variant]:
    """Concurrent sessions to explore: 2, 4, ... up to one per thread."""
    counts = [2 ** i for i in range(1, 8) if 2 ** i <= threads]
    return [Variant((("sessions", n),), f"n{n}", _sessions(n)) for n in counts]


#: One model run as several sessions at once, for engines whose sessions release the GIL while
#: they compute (ONNX Runtime, PyTorch): their counterpart of OpenVINO's streams.
SESSIONS = EngineOption(
    "sessions", "ONNX Runtime and PyTorch: sessions of the model, each on its share of the "
                "threads, running whole batches at once from as many threads (the harness keeps "
                "one batch in flight per session) [default: 1].")


class ConcurrentSessions(Session):
    """Sessions of one model whose batches run at once, one worker thread per session; an
    engine's error in a batch is raised by the next ``start`` or by ``close``."""

    def __init__(self, sessions: list[Session]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._sessions = sessions
        self._pool = ThreadPoolExecutor(max_workers=len(sessions))
        self._error: BaseException | None = None
        self.requests = len(sessions)
        self.execution = sessions[0].execution

    def feed(self, batch: np.ndarray) -> Any:
        return self._sessions[0].feed(batch)

    def run(self, batch: Any) -> np.ndarray:
        return self._sessions[0].run(batch)

    def outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._sessions[0].outputs(batch)

    def run_outputs(self, batch: Any) -> list[np.ndarray]:
        return self._sessions[0].run_outputs(batch)

    def run_on(self, slot: int, batch: Any) -> list[np.ndarray]:
        return self._sessions[slot].run_outputs(batch)

    def start(self, slot: int, batch: Any, done: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error

        def work() -> None:
            try:
                self._sessions[slot].run(batch)
            except BaseException as e:  # kept for the caller's thread; done() must still come
                self._error = e
            finally:
                done()

        self._pool.submit(work)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for s in self._sessions:
            s.close()
        if self._error is not None:
            raise self._error


def concurrently(spec: SessionSpec, make: Callable[[int], Session]) -> Session:
    """``make(spec.threads)``, or, with the ``sessions`` option above 1, that many sessions made
    on an equal share of the threads (at least one each), run at once; recorded in the details."""
    n = spec.option("sessions") or 1
    if n == 1:
        return make(spec.threads)
    per = max(spec.threads // n, 1)
    t0 = time.perf_counter()
    sessions = [make(per) for _ in range(n)]
    execution = sessions[0].execution
    execution.details = {**execution.details, "sessions": n, "threads_per_session": per,
                         "api": "concurrent sessions"}
    execution.concurrency = _sessions(n)
    execution.prepare_seconds = time.perf_counter() - t0
    return ConcurrentSessions(sessions)
