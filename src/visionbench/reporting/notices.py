"""What a reader must be told about a run beside its numbers: emulated or substituted precisions,
unstable or disturbed repeats, what ran contradicted by its outputs or its speed, ratios between
precisions beyond what the CPU's instructions allow, measurements that could not run, engines
that are not installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from visionbench.reporting.format import peak_for, peak_share
from visionbench.results import Measurement, Results

#: A precision's native speed-up over FP32 below this, at the same batch and mode, contradicts
#: the precision recorded (a BF16 or INT8 graph on a CPU with its instructions runs faster).
SPEEDUP_FLOOR = 1.1


def speedup_ceiling(precision: str, flags: set[str]) -> float:
    """The largest speed-up over FP32 the CPU's instructions allow ``precision``, with a margin:
    BF16 doubles FP32's multiply-adds per instruction with AVX512_BF16 (2.5 allowed), much more with
    AMX (8); INT8 quadruples them with VNNI (5 allowed), more with AMX (10), and without VNNI
    needs two instructions where VNNI needs one (3); a precision the CPU lacks is emulated (1.3)."""
    if precision == "bf16":
        return 8.0 if "amx_bf16" in flags else 2.5 if "avx512_bf16" in flags else 1.3
    return 10.0 if "amx_int8" in flags else 5.0 if flags & {"avx512_vnni", "avx_vnni"} else 3.0


#: A figure above its precision's measured peak by more than this share is impossible (the
#: peak is the best of a few windows; an engine's best window may pass it by a little).
PEAK_MARGIN = 0.10


def impossible(results: Results) -> list[Notice]:
    """Each figure whose arithmetic rate is above what this machine's instructions can do (its
    precision's measured peak plus ``PEAK_MARGIN``): a timing error or a disturbed clock, or a
    model doing less work than its FLOPs say. Not judged where AMX could run the precision (its
    tiles outrun the measured AVX-512 peak)."""
    flags = set(results.system.isa_flags)
    out = []
    for m in results.measurements:
        share = peak_share(results, m) if m.status == "ok" else None
        amx = m.precision != "fp32" and any(f.startswith("amx") for f in flags)
        if share is None or amx or share <= 1 + PEAK_MARGIN:
            continue
        peak = peak_for(results, m.precision)
        assert peak is not None
        out.append(Notice("warning", m.id, (
            f"impossible: {m.throughput_ips:.1f} images/s is {share:.0%} of this machine's "
            f"{m.precision.upper()} peak ({peak.gops:.0f} GOP/s, {peak.isa}); the timing or the "
            "model's FLOP count is wrong, or the peak was measured on slower cores "
            "(visionbench sysinfo --peak measures it again)")))
    return out


def _speed(m: Measurement) -> float | None:
    if m.mode == "throughput":
        return m.throughput_ips
    return 1.0 / m.latency.p50_ms if m.latency and m.latency.p50_ms else None


def plausibility(results: Results) -> list[Notice]:
    """Each lower precision's speed-up over FP32 (same model, engine, method and mode) checked
    against what the CPU allows: above the ceiling is implausible, naming the side more likely
    disturbed; natively under the floor at the same batch contradicts what was recorded."""
    flags = set(results.system.isa_flags)
    native = {"bf16": bool(results.system.bf16_native), "int8": bool(results.system.int8_vnni)}
    ok = [m for m in results.measurements if m.status == "ok" and _speed(m)]
    fp32 = {(m.model, m.engine, m.method, m.mode): m for m in ok if m.precision == "fp32"}
    out: list[Notice] = []
    for m in ok:
        base = fp32.get((m.model, m.engine, m.method, m.mode))
        if m.precision == "fp32" or base is None:
            continue
        ratio = _speed(m) / _speed(base)  # type: ignore[operator]
        ceiling = speedup_ceiling(m.precision, flags)
        if ratio > ceiling:
            suspect = max((base, m), key=lambda x: (x.disturbed, x.cv or 0.0))
            out.append(Notice("warning", m.id, (
                f"implausible: {m.precision} ran {ratio:.2f}x FP32's speed, above the {ceiling:g}x "
                f"this CPU's instructions allow; {suspect.id} is the likelier disturbed side "
                f"(CV {100 * (suspect.cv or 0):.1f}%{', disturbed' if suspect.disturbed else ''})")))
        elif (native[m.precision] and m.batch_size == base.batch_size
              and m.executed_precision == m.precision and ratio < SPEEDUP_FLOOR):
            out.append(Notice("note", m.id, (
                f"{m.precision} ran {ratio:.2f}x FP32's speed at the same batch, on a CPU with "
                f"native {m.precision.upper()}: it should be faster; check that the "
                f"{m.precision} graph is what was timed")))
    return out


@dataclass(frozen=True)
class Notice:
    level: Literal["warning", "note"]
    subject: str
    text: str


def notices(results: Results) -> list[Notice]:
    out: list[Notice] = []
    if results.status != "complete":
        out.append(Notice("warning", "run", f"the run is {results.state}: some measurements may be "
                                            "missing (visionbench resume measures them)"))
    for m in results.measurements:
        if m.status == "failed":
            out.append(Notice("warning", m.id, f"failed: {m.reason}"))
        elif m.status in ("unsupported", "skipped"):
            out.append(Notice("note", m.id, f"{m.status}: {m.reason}"))
        if m.emulated:
            out.append(Notice("warning", m.id, "EMULATED: this CPU has no native support for "
                                               f"{m.precision}; the figure is not what a CPU with it "
                                               "would reach"))
        for w in m.warnings:
            loud = w.startswith(("unstable", "asked for", "disturbed", "contradiction"))
            out.append(Notice("warning" if loud else "note", m.id, w))
    for a in results.accuracy:
        subject = f"accuracy {a.engine} {a.precision}"
        if a.status == "failed":
            out.append(Notice("warning", subject, f"failed: {a.reason}"))
        if a.mlperf_99 == "fail":
            out.append(Notice("warning", subject, f"fails MLPerf's rule: top-1 {a.top1:.2%} is under 99% "
                                                  f"of this engine's FP32 top-1"))
    if results.data and results.data.get("unreadable"):
        n = len(results.data["unreadable"])
        out.append(Notice("warning", "data", f"{n} image(s) could not be read and were skipped"))
    if results.calibration.get("source") == "synthetic" and any(
            m.precision == "int8" and m.status == "ok" for m in results.measurements):
        out.append(Notice("note", "calibration", "INT8 was calibrated on synthetic inputs: its speed "
                                                 "is measured, its accuracy is not (give --data)"))
    out += plausibility(results) + impossible(results)
    for name, hint in results.engines_not_installed.items():
        out.append(Notice("note", name, f"engine not installed, not measured ({hint})"))
    return out
