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
        out.append(Notice("warning", "run", f"the run is {results.status}: some measurements may be "
                                            "missing"))
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
            loud = w.startswith(("unstable", "asked for"))
            out.append(Notice("warning" if loud else "note", m.id, w))
    for name, hint in results.engines_not_installed.items():
        out.append(Notice("note", name, f"engine not installed, not measured ({hint})"))
    return out
