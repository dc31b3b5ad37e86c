"""The fleet report, read only from a fleet directory's summary: per precision and mode every
node side by side with the fleet median, each node's ratio to it with its repeats' spread,
outliers named, the cluster's aggregate images/s in concurrent runs. Console tables, one
figure per mode (PNG, SVG), fleet.md and fleet.html."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from visionbench.reporting.figures import HATCHES, SHADES, render, write_outputs
from visionbench.reporting.html import TEMPLATES, data_uri
from visionbench.results.fleet import FleetRow, FleetSummary, NodeCell

TITLES = {"throughput": "Throughput (images/s, large batch)", "latency": "Latency (batch 1, p50 ms)"}
COLUMNS = ["engine", "precision", "node", "value", "repeats vary", "vs median", "peak MiB",
           "J/image", "verdict"]


def _value(v: float | None, mode: str) -> str:
    if v is None:
        return "—"
    return f"{v:.1f}" if mode == "throughput" else (f"{v:.3g}" if v < 1 else f"{v:.2f}")


def _verdict(c: NodeCell, pct: float) -> str:
    if c.value is None:
        return c.note
    if c.outlier:
        return f"OUTLIER: {c.slower_pct:.1f}% slower (threshold {pct:g}%)" + (
            f"; {c.note}" if c.note else "")
    return "ok"


def node_rows(summary: FleetSummary, mode: str) -> list[dict]:
    """Table rows of one mode: each node, then the fleet median (and aggregate) per key."""
    rows = []
    for row in summary.rows:
        if row.key.mode != mode:
            continue
        engine = row.key.series()
        precision = (f"{row.key.precision} @{row.batch}" if mode == "throughput" and row.batch
                     else row.key.precision)
        for c in row.cells:
            rows.append({"cells": [engine, precision, c.node, _value(c.value, mode),
                                   "—" if c.cv is None or c.value is None else f"{100 * c.cv:.1f}%",
                                   "—" if c.ratio is None else f"{c.ratio:.2f}x",
                                   "—" if c.peak_mib is None else f"{c.peak_mib:.0f}",
                                   "—" if c.joules_per_image is None else f"{c.joules_per_image:.3f}",
                                   _verdict(c, summary.outlier_pct)], "outlier": c.outlier})
        rows.append({"cells": [engine, precision, "fleet median", _value(row.median, mode), "",
                               "1.00x", "", "", f"{len([c for c in row.cells if c.value])} nodes"],
                     "median": True})
        if row.aggregate is not None:
            rows.append({"cells": [engine, precision, "cluster aggregate",
                                   _value(row.aggregate, mode), "", "", "", "",
                                   f"sum of {row.aggregate_nodes} nodes timed together"],
                         "median": True})
    return rows


def _modes(summary: FleetSummary) -> list[str]:
    return [m for m in TITLES if any(r.key.mode == m for r in summary.rows)]


def _header(summary: FleetSummary) -> list[str]:
    f = summary.fleet
    return [
        f"Fleet run {f.created_at} on the Ray cluster {f.driver.get('cluster') or f.address}: "
        f"{len(f.nodes)} nodes, "
        f"{f.mode}, status {f.status}; outliers: slower than the fleet median by more than "
        f"{summary.outlier_pct:g}%.",
        *[f"{n.name} ({n.address}, {n.cpus:g} CPUs): {n.status}"
          + (f": {n.reason}" if n.reason else "") + f"; {n.measurements} measurements, "
          f"{n.seconds:.0f} s" for n in f.nodes],
    ]


def print_fleet(console: Console, summary: FleetSummary) -> None:
    for line in _header(summary):
        console.print(line, highlight=False, markup=False)
    for mode in _modes(summary):
        t = Table(title=f"{TITLES[mode]}; vs median: above 1 is faster", title_justify="left")
        for col in COLUMNS:
            t.add_column(col, justify="right" if col in ("value", "repeats vary", "vs median") else "left")
        for r in node_rows(summary, mode):
            style = "bold red" if r.get("outlier") else ("dim" if r.get("median") else None)
            t.add_row(*r["cells"], style=style)
        console.print(t)
    for o in summary.outliers:
        console.print(f"[bold red]outlier[/] {o}", highlight=False)
    if summary.rows and not summary.outliers:
        console.print(f"no outliers: every node within {summary.outlier_pct:g}% of the fleet median")


def _figure(summary: FleetSummary, mode: str) -> Figure:
    rows: list[FleetRow] = [r for r in summary.rows if r.key.mode == mode]
    nodes = [n.name for n in summary.fleet.nodes if n.name in summary.runs]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(rows) * max(len(nodes), 1) / 2 + 3), 4.4), dpi=120)
    width = 0.8 / max(len(nodes), 1)
    top = max((c.value for r in rows for c in r.cells if c.value), default=1.0)
    labelled: set[str] = set()
    for i, name in enumerate(nodes):
        for j, row in enumerate(rows):
            c = next((c for c in row.cells if c.node == name), None)
            x = j - 0.4 + width * (i + 0.5)
            if c is None or c.value is None:
                ax.text(x, top * 0.02, "no result", rotation=90, ha="center", va="bottom",
                        fontsize=7, color="0.3")
                continue
            ax.bar(x, c.value, width, color=SHADES[i % len(SHADES)], hatch=HATCHES[i % len(HATCHES)],
                   edgecolor="black", linewidth=1.6 if c.outlier else 0.6,
                   label=None if name in labelled else name)
            labelled.add(name)
            ax.text(x, c.value + top * 0.01, ("OUTLIER\n" if c.outlier else "") + f"{c.ratio:.2f}x",
                    ha="center", va="bottom", fontsize=7, fontweight="bold" if c.outlier else None)
    for j, row in enumerate(rows):
        if row.median is not None:
            ax.hlines(row.median, j - 0.45, j + 0.45, colors="black", linestyles="--", linewidth=1,
                      label="fleet median" if j == 0 else None)
        if row.aggregate is not None:
            ax.text(j, top * 1.2, f"cluster: {row.aggregate:.1f} images/s", ha="center",
                    va="top", fontsize=7, fontweight="bold")
    ax.set_xticks(range(len(rows)), [f"{r.key.series()}\n{r.key.precision.upper()}" for r in rows],
                  fontsize=8)
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("images / second (higher is better)" if mode == "throughput"
                  else "ms, p50 (lower is better)")
    model = next(iter(summary.runs.values())).model.name if summary.runs else ""
    ax.set_title(f"{model}: {TITLES[mode]} per node, {summary.fleet.mode}\n"
                 "above each bar: its ratio to the fleet median (>1 is faster)", fontsize=9)
    ax.legend(fontsize=8, frameon=False, ncols=2)
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


def fleet_figures(summary: FleetSummary) -> dict[str, dict[str, bytes]]:
    return {f"fleet_{mode}": render(_figure(summary, mode)) for mode in _modes(summary)}


def fleet_markdown(summary: FleetSummary) -> str:
    lines = ["# Fleet run", "", *[f"- {line}" for line in _header(summary)]]
    for mode in _modes(summary):
        lines += ["", f"## {TITLES[mode]}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        for r in node_rows(summary, mode):
            cells = [f"**{c}**" if r.get("outlier") and c else c for c in r["cells"]]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Outliers", ""]
    lines += [f"- {o}" for o in summary.outliers] or [
        f"None: every node within {summary.outlier_pct:g}% of the fleet median."]
    return "\n".join(lines) + "\n"


def fleet_html(summary: FleetSummary, figures: dict[str, dict[str, bytes]]) -> str:
    return TEMPLATES.get_template("fleet.html.j2").render(
        s=summary, header=_header(summary), columns=COLUMNS, titles=TITLES, modes=_modes(summary),
        rows={mode: node_rows(summary, mode) for mode in _modes(summary)},
        figures={name: data_uri(f["png"]) for name, f in figures.items()},
    )


def write_fleet_report(summary: FleetSummary, directory: Path) -> list[Path]:
    figures = fleet_figures(summary)
    return write_outputs(figures, {"fleet.md": fleet_markdown(summary),
                                   "fleet.html": fleet_html(summary, figures)}, directory)
