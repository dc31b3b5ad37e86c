"""A suite run summarised per engine and precision: geometric means over the workloads of
throughput and of batch-1 p50 latency, the geometric-mean speed-up over FP32, and the suite
score. All from the reference method's measurements, the study's method on every machine.

Suite score = the geometric mean, over the suite's W workloads, of sqrt(throughput x 1000 / p50):
images per second at each workload's throughput batch and batch-1 inferences per second, each
counted once. It needs every workload measured, and compares only between runs of one suite
version (the same workloads, inputs and batches)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from visionbench.results.kinds import Results
from visionbench.results.schema import Measurement


@dataclass(frozen=True)
class SuiteRow:
    engine: str
    precision: str
    workloads: int  # measured (throughput and latency)
    throughput_geomean: float | None  # images/s
    p50_geomean_ms: float | None
    speedup_vs_fp32: float | None  # geometric mean of per-workload throughput ratios
    score: float | None
    missing: list[str] = field(default_factory=list)


def geomean(values: Sequence[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _cells(results: Results) -> dict[tuple[str, str, str, str], Measurement]:
    return {(m.model or results.model.name, m.engine, m.precision, m.mode): m
            for m in results.measurements
            if m.status == "ok" and m.method == "reference" and m.throughput_ips}


def workload_names(results: Results) -> list[str]:
    return [m.name for m in results.models] or [results.model.name]


def suite_rows(results: Results) -> list[SuiteRow]:
    """One row per engine and precision measured, in the run's order."""
    cells = _cells(results)
    names = workload_names(results)
    pairs = list(dict.fromkeys((m.engine, m.precision) for m in results.measurements))
    rows = []
    for engine, precision in pairs:
        tput, p50, ratios, missing = [], [], [], []
        for w in names:
            t = cells.get((w, engine, precision, "throughput"))
            lat = cells.get((w, engine, precision, "latency"))
            base = cells.get((w, engine, "fp32", "throughput"))
            if t is None or lat is None or lat.latency is None:
                missing.append(w)
                continue
            tput.append(t.throughput_ips)
            p50.append(lat.latency.p50_ms)
            if base is not None:
                ratios.append(t.throughput_ips / base.throughput_ips)  # type: ignore[operator]
        t_mean, p_mean = geomean(tput), geomean(p50)  # type: ignore[arg-type]
        score = (math.sqrt(t_mean * 1000 / p_mean)
                 if t_mean is not None and p_mean is not None and not missing else None)
        rows.append(SuiteRow(engine, precision, len(tput), t_mean, p_mean,
                             geomean(ratios) if len(ratios) == len(tput) else None, score, missing))
    return rows
