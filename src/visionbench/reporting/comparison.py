"""Outputs of ``visionbench compare``: console tables, grouped figures, compare.md, compare.html
and compare.json, all read from a ``Comparison``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from visionbench.reporting.figures import HATCHES, SHADES, render, write_outputs
from visionbench.reporting.html import TEMPLATES, data_uri
from visionbench.results.compare import ALPHA, CI_LEVEL, Cell, Comparison, Key, noise_text

MODES = {"throughput": "Throughput (images/s, large batch)", "latency": "Latency (batch 1, p50 ms)"}
MARK = {"faster": "faster", "slower": "slower", "within noise": "~", "cannot tell": "?"}


def _value(c: Cell | None, mode: str) -> str:
    if c is None:
        return "—"
    if c.value is None:
        return c.why.split(":")[0] if c.why else "—"
    return f"{c.value:.1f}" if mode == "throughput" else f"{c.value:.2f}"


def _change(c: Cell | None) -> str:
    if c is None or c.speedup is None:
        return "—"
    return f"{c.speedup:.2f}x {MARK[c.verdict]}" if c.verdict else f"{c.speedup:.2f}x"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ci(c: Cell | None) -> str:
    return "—" if c is None or c.ci is None else f"{c.ci[0]:.2f}–{c.ci[1]:.2f}"


def _resource(c: Cell | None, base: Cell | None) -> str:
    """Peak memory while timing (and its ratio to the baseline's), and joules per image."""
    if c is None or c.peak_mib is None:
        return "—"
    text = f"{c.peak_mib:.0f} MiB"
    if base is not None and base is not c and base.peak_mib:
        text += f" ({c.peak_mib / base.peak_mib:.2f}x)"
    if c.joules_per_image is not None:
        text += f", {c.joules_per_image:.3f} J/image"
    return text


def resource_rows(cmp: Comparison) -> list[list[str]]:
    """Per measurement, each run's peak memory while timing (vs the baseline's) and energy."""
    rows = []
    for k in cmp.keys:
        base = cmp.cells.get((k, cmp.baseline))
        cells = [_resource(cmp.cells.get((k, r.label)), base) for r in cmp.runs]
        if any(c != "—" for c in cells):
            rows.append([k.series(_models(cmp)), k.precision, k.mode, *cells])
    return rows


def _models(cmp: Comparison) -> bool:
    """Whether the comparison holds several models (then rows name theirs)."""
    return len({k.model for k in cmp.keys}) > 1


def _keys(cmp: Comparison, mode: str) -> list[Key]:
    return [k for k in cmp.keys if k.mode == mode]


def tables(cmp: Comparison) -> list[Table]:
    out = []
    others = [r.label for r in cmp.runs[1:]]
    for mode, title in MODES.items():
        keys = _keys(cmp, mode)
        if not keys:
            continue
        t = Table(title=f"{title}; speed vs baseline {cmp.baseline} (>1 = faster)", title_justify="left")
        t.add_column("engine")
        t.add_column("precision")
        for r in cmp.runs:
            t.add_column(r.label + (" (baseline)" if r.label == cmp.baseline else ""), justify="right")
        for label in others:
            t.add_column(f"{label} vs baseline", justify="right")
        for k in keys:
            t.add_row(k.series(_models(cmp)), k.precision,
                      *(_value(cmp.cells.get((k, r.label)), mode) for r in cmp.runs),
                      *(_change(cmp.cells.get((k, label))) for label in others))
        out.append(t)
    if rows := resource_rows(cmp):
        t = Table(title="Memory while timing (peak, vs baseline) and energy", title_justify="left")
        for col in ("engine", "precision", "mode", *(r.label for r in cmp.runs)):
            t.add_column(col)
        for row in rows:
            t.add_row(*row)
        out.append(t)
    return out


def print_comparison(console: Console, cmp: Comparison) -> None:
    console.print("[bold]Runs[/]")
    for r in cmp.runs:
        s = r.results.system
        base = " (baseline)" if r.label == cmp.baseline else ""
        console.print(f"  {r.label}{base}: {r.path} — {s.cpu_model}, {s.cpus_available} CPUs, "
                      f"{r.results.model.name}, {r.results.created_at}", highlight=False)
    for label, diffs in cmp.differences.items():
        console.print(f"[bold]{label}[/] differs from the baseline in: "
                      + ("; ".join(diffs) if diffs else "nothing recorded"), highlight=False)
    for t in tables(cmp):
        console.print(t)
    console.print(f"faster/slower: significant (p < {ALPHA}): throughput with "
                  f"{noise_text(cmp.run_noise)} (--run-noise), latency also beyond the spread "
                  "between repeats; ~: within noise; ?: cannot tell (too few repeats)",
                  highlight=False)


def _figure(cmp: Comparison, mode: str) -> Figure:
    keys = [k for k in _keys(cmp, mode)
            if any((c := cmp.cells.get((k, r.label))) and c.value is not None for r in cmp.runs)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(keys) + 2), 4.2), dpi=120)
    width = 0.8 / len(cmp.runs)
    for i, r in enumerate(cmp.runs):
        xs, ys, errs = [], [], []
        for j, k in enumerate(keys):
            c = cmp.cells.get((k, r.label))
            if c is None or c.value is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(c.value)
            errs.append(max(c.p99_ms - c.value, 0.0) if mode == "latency" and c.p99_ms else 0.0)
        ax.bar(xs, ys, width, yerr=[[0] * len(errs), errs] if any(errs) else None, capsize=3,
               color=SHADES[i % len(SHADES)], hatch=HATCHES[i % len(HATCHES)], edgecolor="black",
               linewidth=0.6, label=r.label + (" (baseline)" if r.label == cmp.baseline else ""))
    ax.set_xticks(range(len(keys)),
                  [f"{k.series(_models(cmp))}\n{k.precision.upper()}" for k in keys], fontsize=8)
    ax.set_ylabel("images / second (higher is better)" if mode == "throughput"
                  else "ms, p50 bar, p99 whisker (lower is better)")
    ax.set_title(f"{MODES[mode]}: {len(cmp.runs)} runs", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


def compare_figures(cmp: Comparison) -> dict[str, dict[str, bytes]]:
    return {f"compare_{mode}": render(_figure(cmp, mode)) for mode in MODES if _keys(cmp, mode)}


def compare_markdown(cmp: Comparison) -> str:
    lines = [f"# Comparison against {cmp.baseline}", ""]
    for r in cmp.runs:
        s = r.results.system
        lines.append(f"- **{r.label}**{' (baseline)' if r.label == cmp.baseline else ''}: "
                     f"{s.cpu_model}, {s.cpus_available} CPUs, {r.results.model.name}, "
                     f"{r.results.created_at}")
    for label, diffs in cmp.differences.items():
        lines += ["", f"{label} differs from the baseline in: " + ("; ".join(diffs) or "nothing recorded")]
    for mode, title in MODES.items():
        keys = _keys(cmp, mode)
        if not keys:
            continue
        lines += ["", f"## {title}", "",
                  f"| engine | precision | run | value | speed vs baseline | {CI_LEVEL:.0%} CI | p "
                  "| verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for k in keys:
            for r in cmp.runs:
                c = cmp.cells.get((k, r.label))
                lines.append(f"| {k.series(_models(cmp))} | {k.precision} | {r.label} | {_value(c, mode)} | "
                             f"{'' if c is None or c.speedup is None else f'{c.speedup:.2f}x'} | "
                             f"{_ci(c)} | {_p(c.p_value if c else None)} | {c.verdict or '' if c else ''} |")
    if rows := resource_rows(cmp):
        lines += ["", "## Memory while timing (peak, vs baseline) and energy", "",
                  "| engine | precision | mode | " + " | ".join(r.label for r in cmp.runs) + " |",
                  "|---|---|---|" + "---|" * len(cmp.runs),
                  *["| " + " | ".join(row) + " |" for row in rows]]
    return "\n".join(lines) + "\n"


def compare_html(cmp: Comparison, figures: dict[str, dict[str, bytes]]) -> str:
    rows = {
        mode: [{"key": k, "cells": [cmp.cells.get((k, r.label)) for r in cmp.runs]}
               for k in _keys(cmp, mode)]
        for mode in MODES
    }
    return TEMPLATES.get_template("compare.html.j2").render(
        cmp=cmp, rows=rows, titles=MODES, alpha=ALPHA, level=f"{CI_LEVEL:.0%}",
        noise=noise_text(cmp.run_noise), value=_value,
        p=_p, ci=_ci,
        resource_rows=resource_rows(cmp),
        several_models=_models(cmp),
        figures={name: data_uri(f["png"]) for name, f in figures.items()},
    )


def write_comparison(cmp: Comparison, directory: Path) -> list[Path]:
    figures = compare_figures(cmp)
    return write_outputs(figures, {"compare.md": compare_markdown(cmp),
                                   "compare.html": compare_html(cmp, figures),
                                   "compare.json": json.dumps(cmp.as_dict(), indent=2)}, directory)
