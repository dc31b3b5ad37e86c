"""summary.md: the run's two tables and its warnings, for pasting into an issue or a wiki."""

from __future__ import annotations

from visionbench.reporting.format import (
    COLD_COLUMNS,
    COLD_RUN_COLUMNS,
    INSTANCE_COLUMNS,
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
    history,
    instance_rows,
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
from visionbench.results import Measurement, Results


def _ran(m: Measurement) -> str:
    return ran_as(m) + (f": {m.reason}" if m.reason else "")


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(r) + " |" for r in rows]]


def _suite(results: Results) -> list[str]:
    lines: list[str] = []
    for task, rows in suite_tables(results).items():
        lines += [f"## Suite: {task}", "", *_table(SUITE_COLUMNS, rows), ""]
    lines += ["## Suite summary (geometric means over the workloads)", "",
              *_table(SUMMARY_COLUMNS, suite_summary_rows(results)), "", suite_note(results) + "."]
    if cold := cold_rows(results):
        lines += ["", "## Cold start, memory and energy", "", *_table(COLD_COLUMNS, cold)]
    if notes := [*fidelity_notes(results), *resource_notes(results)]:
        lines += ["", *[f"- {text}" for text in notes]]
    bad = [f"- {m.id}: {m.status}: {m.reason}" for m in results.measurements
           if m.status != "ok" and m.reason]
    warnings = [f"- {m.id}: {w}" for m in results.measurements for w in m.warnings]
    if bad or warnings:
        lines += ["", "## Warnings", "", *bad, *warnings]
    return lines


def summary_markdown(results: Results) -> str:
    s = results.system
    sweep = per_batch(results)
    lines = [
        f"# {subject(results).strip()} on {s.cpu_model}",
        "",
        f"{s.physical_cores} cores, {s.logical_cpus} logical CPUs, "
        f"{s.memory_total_gib} GiB; ISA: {' '.join(s.isa_flags)}; {s.os}.  ",
        "Software: " + ", ".join(f"{k} {v}" for k, v in results.software.items()) + ".  ",
        f"Run {results.created_at}, status {results.state}, {results.config.threads} threads."
        + (f"  \n{h}" if (h := history(results)) else ""),
        "",
    ]
    if results.kind == "suite":
        return "\n".join(lines + _suite(results)) + "\n"
    lines += [
        f"## {throughput_title(results)}",
        "",
        "| engine | precision | batch | images/s | CV | vs fp32 |"
        + (" p50 ms | p99 ms |" if sweep else "") + " ran | fidelity to fp32 |",
        "|---|---|---|---|---|---|" + ("---|---|" if sweep else "") + "---|---|",
    ]
    ratios = fp32_ratios(results.measurements)
    for m in results.measurements:
        if m.mode == "throughput":
            cv = "—" if m.cv is None else f"{100 * m.cv:.1f}%"
            lat = "".join(f" {v} |" for v in batch_latency(m)) if sweep else ""
            lines.append(f"| {engine_text(m)} | {m.precision} | {batch_text(m)} | "
                         f"{fmt(m.throughput_ips, '.1f')} | {cv} | {ratios[m.id]} |{lat} {_ran(m)} | "
                         f"{fidelity_text(m)} |")
    if any(m.mode == "latency" for m in results.measurements):
        lines += [
            "",
            "## Latency (batch size 1, ms)",
            "",
            "| engine | precision | p50 | p90 | p99 | p99.9 | mean | images/s | ran | fidelity to fp32 |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for m in results.measurements:
        if m.mode == "latency":
            lines.append(f"| {engine_text(m)} | {m.precision} | " + " | ".join(latency_values(m))
                         + f" | {fmt(m.throughput_ips, '.1f')} | {_ran(m)} | {fidelity_text(m)} |")
    if cold := cold_rows(results):
        lines += ["", "## Cold start, memory and energy", "", *_table(COLD_COLUMNS, cold)]
    if runs := cold_run_rows(results):
        lines += ["", "## Cold start in fresh processes (--mode cold)", "",
                  *_table(COLD_RUN_COLUMNS, runs), "", f"{cold_run_note(results)}."]
    if results.accuracy:
        d = results.data or {}
        lines += ["", f"## Accuracy ({d.get('images')} images, {d.get('preprocessing')})", "",
                  "| engine | precision | top-1 | top-5 | same top-1 as fp32 | MLPerf 99% | ran |",
                  "|---|---|---|---|---|---|---|"]
        for a in results.accuracy:
            pct = [fmt(None if v is None else 100 * v, ".2f")
                   for v in (a.top1, a.top5, a.agreement_with_fp32)]
            ran = (a.executed_precision or "?") if a.status == "ok" else f"{a.status}: {a.reason}"
            lines.append(f"| {a.engine} | {a.precision} | " + " | ".join(pct)
                         + f" | {a.mlperf_99 or '—'} | {ran} |")
    if results.mlperf:
        lines += ["", "## MLPerf Inference scenarios (LoadGen)", "",
                  "| " + " | ".join(MLPERF_COLUMNS) + " |", "|" + "---|" * len(MLPERF_COLUMNS),
                  *["| " + " | ".join(row) + " |" for row in mlperf_rows(results)]]
    if instances := instance_rows(results):
        lines += ["", "## Pinned instances", "", "| " + " | ".join(INSTANCE_COLUMNS) + " |",
                  "|" + "---|" * len(INSTANCE_COLUMNS),
                  *["| " + " | ".join(row) + " |" for row in instances]]
    if results.tune:
        lines += ["", "## Tuned settings (confirmed round by round beside the default)", "",
                  "| engine | precision | best setting | images/s | p99 ms | default images/s | "
                  "vs default | verdict | explored |", "|---|---|---|---|---|---|---|---|---|"]
        rows = tune_rows(results)
        lines += [f"| {r['engine']} | {r['precision']} | {r['setting']} | {r['ips']} | {r['p99']} | "
                  f"{r['default']} | {r['vs']} | {r['verdict']} (p {r['p']}) | {r['explored']} |"
                  for r in rows]
        lines += ["", *[f"{r['engine']} {r['precision']}: the default was {r['default_setting']}"
                        + (f"; {r['verdict']}: {r['why']}" if r["why"] else "") + ".  "
                        for r in rows if r["default_setting"]]]
        lines += ["", *[f"Re-run {r['engine']} {r['precision']}: `{r['command']}`  "
                        for r in rows if r["command"]]]
    if results.calibration:
        lines += ["", f"INT8 calibration: {results.calibration['how']}."]
    if notes := [*method_notes(results), *fidelity_notes(results), *resource_notes(results)]:
        lines += ["", *[f"- {text}" for text in notes]]
    warnings = [f"- {m.id}: {w}" for m in results.measurements for w in m.warnings]
    if warnings:
        lines += ["", "## Warnings", "", *warnings]
    return "\n".join(lines) + "\n"
