"""LoadGen's test settings: MLPerf's ResNet-50 rules (LoadGen's own mlperf.conf), a user.conf on
top, then the flags; and what is chosen from the probe rather than given."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from visionbench.config import MLPERF_SHORT_SECONDS
from visionbench.errors import VisionbenchError
from visionbench.flags import flag
from visionbench.scenarios.mlperf.sut import Probe

LoadgenScenario = Literal["SingleStream", "MultiStream", "Server", "Offline"]


SCENARIOS: tuple[LoadgenScenario, ...] = ("SingleStream", "MultiStream", "Server", "Offline")


#: ``--short``: MLPERF_SHORT_SECONDS long and this few queries; never compliant.
SHORT_MIN_QUERIES = 64


#: Default largest batch the system under test forms, per scenario.
DEFAULT_MAX_BATCH: dict[LoadgenScenario, int] = {"SingleStream": 1, "MultiStream": 8, "Server": 8,
                                          "Offline": 32}


#: LoadGen pre-generates queries for the minimum duration from the expected speed it is told, and
#: a run that runs out of them early is INVALID: it is told this much faster than measured
#: (Offline's expected QPS x2, SingleStream's and MultiStream's expected latency /2).
EXPECTED_MARGIN = 2.0


#: Server's default target QPS, as a share of the throughput measured before the run.
SERVER_DEFAULT_LOAD = 0.5
#: --find-peak: each bisection step a run of this many seconds (or --duration, if shorter).
PEAK_STEP_SECONDS = 10.0


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

    scenario: LoadgenScenario
    target_qps: float | None = flag(help=(
        f"Server: queries per second LoadGen sends [default: {SERVER_DEFAULT_LOAD:.0%} of the "
        "throughput measured before the run]; Offline: the expected throughput [default: "
        "measured]."))
    target_latency_ms: float | None = flag(
        help="Server's latency bound at its percentile [default: MLPerf's 15 ms at p99].")
    samples_per_query: int | None = flag(help="MultiStream's query size [default: MLPerf's 8].")
    max_batch: int | None = flag(help=(
        "Largest batch the system under test forms from waiting samples [default: "
        + ", ".join(f"{b} {s}" for s, b in DEFAULT_MAX_BATCH.items()) + "]."))
    duration_s: float | None = flag(name="--duration",
                                    help="Minimum duration in seconds [default: MLPerf's 600].")
    min_queries: int | None = flag(help="Minimum query count [default: MLPerf's].")
    user_conf: Path | None = flag(help="A LoadGen user.conf (resnet50.<Scenario>.<key> = value), "
                                       "applied over MLPerf's rules.")
    short: bool = flag(False, help=f"A quick run: {MLPERF_SHORT_SECONDS:g} s and few queries, "
                                   "marked not compliant (MLPerf requires 600 s).")
    performance_samples: int | None = flag(
        help="Samples held in memory [default: MLPerf's 1024, or the images of --data].")
    accuracy: bool = flag(False, help="LoadGen's accuracy mode on --data: every image once, top-1 "
                                      "from LoadGen's log.")
    find_peak: bool = flag(False, help="Server: bisect for the highest QPS that keeps the latency "
                                       "bound (short runs), then run it with the full settings.")
    peak_steps: int = flag(6, help=f"--find-peak's bisection runs (each {PEAK_STEP_SECONDS:g} s, "
                                   "or --duration if shorter).")

    def check(self) -> None:
        """One line naming the flag of the first option out of range."""
        for name, v in (("--max-batch", self.max_batch), ("--samples-per-query", self.samples_per_query),
                        ("--min-queries", self.min_queries),
                        ("--performance-samples", self.performance_samples),
                        ("--peak-steps", self.peak_steps)):
            if v is not None and v <= 0:
                raise VisionbenchError(f"{name} must be a positive integer, got {v}")
        for name, f in (("--target-qps", self.target_qps),
                        ("--target-latency-ms", self.target_latency_ms),
                        ("--duration", self.duration_s)):
            if f is not None and not f > 0:
                raise VisionbenchError(f"{name} must be positive, got {f}")


def batch_sizes(opts: Options, samples_per_query: int) -> list[int]:
    """The batch sizes to prepare: powers of two up to the largest, and MultiStream's query size."""
    top = opts.max_batch or (samples_per_query if opts.scenario == "MultiStream"
                             else DEFAULT_MAX_BATCH[opts.scenario])
    sizes = {2 ** i for i in range(int(math.log2(top)) + 1)} | {top}
    if opts.scenario == "MultiStream":
        sizes.add(samples_per_query)
    return sorted(sizes)


#: A user.conf line: ``model.Scenario.key = value`` (``*`` for any model or scenario).
_CONF_LINE = re.compile(r"[\w*.-]+\.[\w*]+\.\w+\s*=\s*[\w.+-]+")
#: LoadGen reads user.conf itself, in native code: a file larger than any real one is refused first.
MAX_USER_CONF = 1 << 20


def check_user_conf(path: Path) -> None:
    """A user.conf that LoadGen can read, or one clear line: text lines of
    ``model.Scenario.key = value`` (comments after ``#``), then LoadGen's own reading of it."""
    if not path.is_file():
        raise VisionbenchError(f"user.conf not found: {path}")
    if path.stat().st_size > MAX_USER_CONF:
        raise VisionbenchError(f"{path} is not a LoadGen user.conf: over {MAX_USER_CONF} bytes")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VisionbenchError(f"cannot read the user.conf {path}: {e}") from e
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text and not _CONF_LINE.fullmatch(text):
            raise VisionbenchError(f"{path}:{n}: expected 'model.Scenario.key = value', got "
                                   f"{line.strip()[:80]!r}")
    lg = loadgen()
    for scenario in SCENARIOS:
        if lg.TestSettings().FromConfig(str(path), "resnet50", scenario, 1) != 0:
            raise VisionbenchError(f"LoadGen could not read {path} for {scenario}")


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


def mlperf_minimums(scenario: LoadgenScenario) -> tuple[int, int]:
    """MLPerf's minimum duration (ms) and query count for ResNet-50 in this scenario, as LoadGen's
    own mlperf.conf states them."""
    lg = loadgen()
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    s.FromConfig("", "resnet50", scenario, 0)
    return s.min_duration_ms, s.min_query_count
