"""What a reader must be told about a run beside its numbers: emulated or substituted precisions,
unstable repeats, measurements that could not run, engines that are not installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from visionbench.results import Results


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
    for name, hint in results.engines_not_installed.items():
        out.append(Notice("note", name, f"engine not installed, not measured ({hint})"))
    return out
