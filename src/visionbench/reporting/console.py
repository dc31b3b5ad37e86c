"""Console tables of a run: throughput, latency, accuracy, tuning and MLPerf (live progress is the
command line's)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from visionbench.reporting.format import (
    COLD_COLUMNS,
    COLD_RUN_COLUMNS,
    MLPERF_COLUMNS,
    SUITE_COLUMNS,
    SUMMARY_COLUMNS,
    batch_latency,
    batch_text,
    cold_rows,
    cold_run_note,
    cold_run_rows,
    engine_text,
    fidelity_notes,
    fidelity_text,
    fmt,
    fp32_ratios,
    latency_values,
    method_notes,
    mlperf_rows,
    per_batch,
    ran_as,
    resource_notes,
    subject,
    suite_note,
    suite_summary_rows,
    suite_tables,
    throughput_title,
    tune_rows,
)
from visionbench.results import Accuracy, Measurement, Results


class Notes:
    """Long reasons printed once under a table, referred to by number in its rows."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def ref(self, m: Measurement | Accuracy) -> str:
        if not m.reason:
            return ""
        if m.reason not in self.texts:
            self.texts.append(m.reason)
        return f"[{self.texts.index(m.reason) + 1}]"


def throughput_table(results: Results, notes: Notes) -> Table:
    t = Table(title=throughput_title(results), title_justify="left")
    sweep = per_batch(results)
    tune = results.kind == "tune"
    cols = ["engine", "precision", *(["phase"] if tune else []), "batch", "images/s", "CV", "vs fp32",
            *(["p50 ms", "p99 ms"] if sweep else []), "ran", "fidelity", "note"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("engine", "precision", "ran", "note", "fidelity")
                     else "right")
    ratios = fp32_ratios(results.measurements)
    for m in results.measurements:
        if m.mode != "throughput":
            continue
        t.add_row(
            engine_text(m), m.precision, *([m.phase or ""] if tune else []), batch_text(m),
            fmt(m.throughput_ips, ".1f"),
            fmt(None if m.cv is None else 100 * m.cv, ".1f") + ("%" if m.cv is not None else ""),
            ratios[m.id], *(batch_latency(m) if sweep else []), ran_as(m), _fidelity(m),
            notes.ref(m),
        )
    return t


def latency_table(results: Results, notes: Notes) -> Table:
    t = Table(title="Latency (batch size 1, ms)", title_justify="left")
    cols = ("engine", "precision", "p50", "p90", "p99", "p99.9", "mean", "images/s", "ran",
            "fidelity", "note")
    for col in cols:
        t.add_column(col, justify="left" if col in ("engine", "precision", "ran", "note", "fidelity")
                     else "right")
    for m in results.measurements:
        if m.mode != "latency":
            continue
        t.add_row(
            engine_text(m), m.precision, *latency_values(m), fmt(m.throughput_ips, ".1f"),
            ran_as(m), _fidelity(m), notes.ref(m),
        )
    return t


def _fidelity(m: Measurement) -> Text:
    text = fidelity_text(m)
    return Text(text, style="bold red" if text.endswith("FLAGGED") else "")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2%}"


def accuracy_table(results: Results, notes: Notes) -> Table:
    d = results.data or {}
    t = Table(title=f"Accuracy ({d.get('images', '?')} images, {d.get('preprocessing', '')})",
              title_justify="left")
    for col in ("engine", "precision", "top-1", "top-5", "same top-1 as fp32", "MLPerf 99%", "ran", "note"):
        t.add_column(col, justify="right" if col in ("top-1", "top-5", "same top-1 as fp32") else "left")
    for a in results.accuracy:
        t.add_row(a.engine, a.precision, _pct(a.top1), _pct(a.top5), _pct(a.agreement_with_fp32),
                  {"pass": "pass", "fail": "[bold red]FAIL[/]"}.get(a.mlperf_99 or "", "—"), ran_as(a),
                  notes.ref(a))
    return t


def tune_table(results: Results) -> Table:
    bound = next((t.max_latency_ms for t in results.tune if t.max_latency_ms), None)
    title = "Tuned settings (confirmed round by round beside the default)" + (
        f", p99 per call within {bound:g} ms" if bound else "")
    t = Table(title=title, title_justify="left")
    for col in ("engine", "precision", "best setting", "images/s", "p99 ms", "default images/s",
                "vs default", "verdict", "explored"):
        t.add_column(col, justify="right" if col in ("images/s", "p99 ms", "default images/s",
                                                      "vs default") else "left")
    for r in tune_rows(results):
        t.add_row(r["engine"], r["precision"], r["setting"], r["ips"], r["p99"], r["default"],
                  r["vs"], r["verdict"], r["explored"])
    return t


def cold_table(rows: list[list[str]]) -> Table:
    t = Table(title="Cold start, memory and energy", title_justify="left")
    for col in COLD_COLUMNS:
        t.add_column(col, justify="left" if col in ("measurement", "cached files") else "right")
    for row in rows:
        t.add_row(*row)
    return t


def mlperf_table(results: Results) -> Table:
    t = Table(title="MLPerf Inference scenarios (LoadGen)", title_justify="left")
    for col in MLPERF_COLUMNS:
        t.add_column(col, justify="right" if col in ("value", "p50 ms", "p90 ms", "p99 ms",
                                                      "queries") else "left")
    for row in mlperf_rows(results):
        t.add_row(*row[:5], f"[bold red]{row[5]}[/]" if row[5].startswith("INVALID") else row[5],
                  *row[6:])
    return t


def print_suite(console: Console, results: Results) -> None:
    """A table per task (throughput and batch-1 latency of each workload side by side), then the
    geometric means and scores per engine and precision."""
    for task, rows in suite_tables(results).items():
        t = Table(title=f"Suite: {task}", title_justify="left")
        for col in SUITE_COLUMNS:
            t.add_column(col, justify="right" if col in ("batch", "images/s", "vs fp32", "p50 ms",
                                                          "p99 ms") else "left")
        for row in rows:
            t.add_row(*row[:-1], Text(row[-1], style="bold red" if row[-1].endswith("FLAGGED")
                                      else ""))
        console.print(t)
    t = Table(title="Suite summary (geometric means over the workloads)", title_justify="left")
    for col in SUMMARY_COLUMNS:
        t.add_column(col, justify="left" if col in ("engine", "precision", "workloads") else "right")
    for row in suite_summary_rows(results):
        t.add_row(*row)
    console.print(t)
    console.print(suite_note(results), markup=False, highlight=False)
    failed = [m for m in results.measurements if m.status != "ok" and m.reason]
    for m in failed:
        console.print(f"{m.id}: {m.status}: {m.reason}", markup=False, highlight=False)


def print_summary(console: Console, results: Results) -> None:
    s = results.system
    console.print(Text.assemble(
        (subject(results).strip(), "bold"), f" on {s.cpu_model} ({s.cpus_available} CPUs, "
        f"ISA: {' '.join(s.isa_flags)}); status: {results.state}"))
    notes = Notes()
    if results.kind == "suite":
        print_suite(console, results)
    else:
        if any(m.mode == "throughput" for m in results.measurements):
            console.print(throughput_table(results, notes))
        if any(m.mode == "latency" for m in results.measurements):
            console.print(latency_table(results, notes))
    if cold := cold_rows(results):
        console.print(cold_table(cold))
    if runs := cold_run_rows(results):
        t = Table(title="Cold start in fresh processes (--mode cold)", title_justify="left")
        for col in COLD_RUN_COLUMNS:
            t.add_column(col, justify="left" if col in ("engine", "precision", "cached files")
                         else "right")
        for row in runs:
            t.add_row(*row)
        console.print(t)
        if note := cold_run_note(results):
            console.print(note, markup=False, highlight=False)
    if results.accuracy:
        console.print(accuracy_table(results, notes))
    if results.mlperf:
        console.print(mlperf_table(results))
        for r in results.mlperf:
            if r.log_dir:
                console.print(f"LoadGen logs: {r.log_dir}/mlperf_log_summary.txt, mlperf_log_detail.txt")
    if results.tune:
        console.print(tune_table(results))
        for r in tune_rows(results):
            if r["default_setting"]:
                console.print(Text(f"{r['engine']} {r['precision']}: default {r['default_setting']}"
                                   + (f"; {r['verdict']}: {r['why']}" if r["why"] else "")))
            if r["command"]:
                console.print(f"re-run {r['engine']} {r['precision']}: {r['command']}", soft_wrap=True)
    if results.calibration:
        console.print(f"INT8 calibration: {results.calibration['how']}", highlight=False)
    for text in [*method_notes(results), *fidelity_notes(results), *resource_notes(results)]:
        console.print(text, markup=False, highlight=False)
    for i, text in enumerate(notes.texts, 1):
        console.print(f"[{i}] {text}", markup=False, highlight=False)
