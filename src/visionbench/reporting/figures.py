"""The study's two figures, read only from the results store: throughput per precision (Figure 1)
and batch-1 latency per precision, p50 bars with p99 whiskers (Figure 2); for a batch-size sweep,
throughput and per-batch latency as lines over batch size. Engines are told apart by
hatching as well as shade, so the figures survive greyscale printing."""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from visionbench.fsutil import atomic_write_all
from visionbench.models.flops import GROUPS, OTHER
from visionbench.results import Measurement, Results
from visionbench.results.suite import workload_names

PRECISIONS = ("fp32", "bf16", "int8")
SHADES = ("0.25", "0.55", "0.8", "0.4", "0.7")
HATCHES = ("", "//", "..", "xx", "\\\\")


def _system_title(results: Results, what: str) -> str:
    s = results.system
    cores = s.physical_cores or s.cpus_available
    threads = results.config.threads
    return f"{results.model.name}: {what}\n{s.cpu_model}, {cores} cores, {threads} threads"


def _grid(results: Results, mode: str) -> tuple[list[str], dict[tuple[str, str], Measurement]]:
    """The bars' series (an engine, with its model and method where they vary) and each series'
    measurement per precision."""
    keys = {m.id: results.key(m) for m in results.measurements if m.mode == mode}
    several = len({k.model for k in keys.values()}) > 1
    cells = {(keys[m.id].series(several), m.precision): m for m in results.measurements
             if m.mode == mode}
    return list(dict.fromkeys(series for series, _ in cells)), cells


def _bars(ax, results: Results, mode: str, value, whisker, label) -> None:
    engines, cells = _grid(results, mode)
    width = 0.8 / max(len(engines), 1)
    top = max((value(m) + whisker(m) for m in cells.values() if m.status == "ok"), default=1.0)
    labelled: set[str] = set()
    for i, engine in enumerate(engines):
        for j, p in enumerate(PRECISIONS):
            x = j - 0.4 + width * (i + 0.5)
            m = cells.get((engine, p))
            if m is None:
                continue
            if m.status != "ok":
                ax.text(x, top * 0.02, f"{m.status}", rotation=90, ha="center", va="bottom",
                        fontsize=7, color="0.3")
                continue
            ax.bar(x, value(m), width, yerr=[[0], [whisker(m)]] if whisker(m) else None,
                   capsize=3, color=SHADES[i % len(SHADES)], hatch=HATCHES[i % len(HATCHES)],
                   edgecolor="black", linewidth=0.6, label=None if engine in labelled else engine)
            labelled.add(engine)
            ax.text(x, value(m) + whisker(m) + top * 0.01, label(m), ha="center", va="bottom",
                    fontsize=7)
    ax.set_xticks(range(len(PRECISIONS)), [p.upper() for p in PRECISIONS])
    ax.set_ylim(0, top * 1.18)
    if labelled:
        ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)


def throughput_figure(results: Results) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _bars(ax, results, "throughput", lambda m: m.throughput_ips, lambda m: 0.0,
          lambda m: f"{m.throughput_ips:.1f}\nbs {m.batch_size}")
    ax.set_ylabel("images / second (higher is better)")
    ax.set_title(_system_title(results, "throughput at large batch"), fontsize=9)
    fig.tight_layout()
    return fig


def latency_figure(results: Results) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _bars(ax, results, "latency", lambda m: m.latency.p50_ms,
          lambda m: max(m.latency.p99_ms - m.latency.p50_ms, 0.0),
          lambda m: f"{m.latency.p50_ms:.3g}")
    ax.set_ylabel("milliseconds, p50 bar, p99 whisker (lower is better)")
    ax.set_title(_system_title(results, "latency at batch size 1"), fontsize=9)
    fig.tight_layout()
    return fig


MARKERS = ("o", "s", "^", "D", "v")
LINESTYLES = ("-", "--", ":", "-.")


def _series(results: Results) -> dict[tuple[str, str], list[Measurement]]:
    """A sweep's measured points per (engine and method, precision), by batch size."""
    out: dict[tuple[str, str], list[Measurement]] = {}
    for m in results.measurements:
        # a tune's batch ladder: explored on one process, streams and requests the engine's
        ladder = m.phase == "explore" and re.search(r"-explore-b\d+$", m.id) is not None
        if m.status == "ok" and m.mode == "throughput" and (results.kind == "sweep" or ladder):
            out.setdefault((results.key(m).series(), m.precision), []).append(m)
    return {k: sorted(v, key=lambda m: m.batch_size) for k, v in out.items()}


def _sweep_axes(ax, results: Results, ylabel: str) -> None:
    batches = sorted({m.batch_size for m in results.measurements})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.grid(color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False)


def _style(results: Results, engine: str, precision: str) -> dict:
    """Colour by precision where one engine (and method) is drawn, else by engine; marker by
    precision, line style by engine."""
    engines = list(dict.fromkeys(series for series, _ in _series(results)))
    i, j = engines.index(engine), PRECISIONS.index(precision)
    return {"color": SHADES[j % len(SHADES)] if len(engines) == 1 else SHADES[i % len(SHADES)],
            "marker": MARKERS[j % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def sweep_throughput_figure(results: Results) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for (engine, p), ms in _series(results).items():
        ax.plot([m.batch_size for m in ms], [m.throughput_ips for m in ms],
                label=f"{engine} {p.upper()}", **_style(results, engine, p))
    ax.set_ylim(bottom=0)
    _sweep_axes(ax, results, "images / second (higher is better)")
    ax.set_title(_system_title(results, "throughput by batch size"), fontsize=9)
    fig.tight_layout()
    return fig


def sweep_latency_figure(results: Results) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for (engine, p), ms in _series(results).items():
        style = _style(results, engine, p)
        xs = [m.batch_size for m in ms]
        ax.plot(xs, [m.latency.p50_ms for m in ms], label=f"{engine} {p.upper()}", **style)
        ax.plot(xs, [m.latency.p99_ms for m in ms], label="_p99",
                **{**style, "linestyle": "none", "marker": "_", "markersize": 12})
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    _sweep_axes(ax, results, "milliseconds per batch, p50 line, p99 tick (lower is better)")
    ax.set_title(_system_title(results, "latency of one batch by batch size"), fontsize=9)
    fig.tight_layout()
    return fig


def _suite_axes(ax, results: Results, engine: str, mode: str, value, label) -> None:
    """One engine's bars: a group per workload, a bar per precision (shade and hatch), log scale:
    the workloads' speeds span orders of magnitude."""
    names = workload_names(results)
    cells = {(m.model, m.precision): m for m in results.measurements
             if m.engine == engine and m.mode == mode and m.method == "reference"}
    width = 0.8 / len(PRECISIONS)
    for j, p in enumerate(PRECISIONS):
        shown = False
        for i, w in enumerate(names):
            m = cells.get((w, p))
            x = i - 0.4 + width * (j + 0.5)
            if m is None:
                continue
            if m.status != "ok":
                ax.text(x, 0.02, m.status, rotation=90, ha="center", va="bottom", fontsize=6,
                        color="0.3", transform=ax.get_xaxis_transform())
                continue
            ax.bar(x, value(m), width, color=SHADES[j], hatch=HATCHES[j], edgecolor="black",
                   linewidth=0.6, label=None if shown else p.upper())
            ax.text(x, value(m) * 1.05, label(m), ha="center", va="bottom", fontsize=6, rotation=90)
            shown = True
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.grid(axis="y", color="0.85", linewidth=0.6, which="both")
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, frameon=False, ncol=3)
    ax.set_title(engine, fontsize=9)


def suite_figure(results: Results, mode: str) -> Figure:
    """Throughput per workload grouped by precision (mode ``throughput``), or batch-1 p50 per
    workload (``latency``): one panel per engine."""
    engines = list(dict.fromkeys(m.engine for m in results.measurements if m.mode == mode))
    fig, axes = plt.subplots(len(engines), 1, figsize=(8, 3.6 * len(engines)), dpi=120,
                             squeeze=False)
    for ax, engine in zip(axes[:, 0], engines, strict=True):
        if mode == "throughput":
            _suite_axes(ax, results, engine, mode, lambda m: m.throughput_ips,
                        lambda m: f"{m.throughput_ips:.3g}")
            ax.set_ylabel("images / second\n(higher is better)", fontsize=8)
        else:
            _suite_axes(ax, results, engine, mode, lambda m: m.latency.p50_ms,
                        lambda m: f"{m.latency.p50_ms:.3g}")
            ax.set_ylabel("batch-1 p50 ms\n(lower is better)", fontsize=8)
    s = results.system
    what = "throughput per workload" if mode == "throughput" else "batch-1 latency per workload"
    fig.suptitle(f"vision suite: {what}\n{s.cpu_model}, {s.physical_cores or s.cpus_available} "
                 f"cores, {results.config.threads} threads", fontsize=9)
    fig.tight_layout()
    return fig


#: The profile figure's segments, in order: the groups of operation types, then the time of a
#: profiled call no operation holds.
UNPLACED = "not placed (between operations)"
SEGMENTS = (*(name for name, _ in GROUPS), OTHER, UNPLACED)


def profile_figure(results: Results) -> Figure:
    """Where the batch-1 time goes: a bar per engine and precision, its profiled call's ms
    split by group of operation types and the time no operation holds; a tick at the
    unprofiled p50."""
    ok = [r for r in results.profiles if r.status == "ok"]
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.45 * len(ok)), dpi=120)
    labels = [(f"{r.model}: " if r.model else "") + f"{r.engine} {r.precision.upper()}" for r in ok]
    shown: set[str] = set()
    for y, r in enumerate(ok):
        left = 0.0
        for i, name in enumerate(SEGMENTS):
            ms = r.unplaced_ms if name == UNPLACED else r.by_group.get(name)
            if not ms or ms <= 0:
                continue
            ax.barh(y, ms, 0.6, left=left, color=SHADES[i] if i < len(SHADES) else "white",
                    hatch=HATCHES[i % len(HATCHES)], edgecolor="black",
                    linewidth=0.5, label=None if name in shown else name)
            shown.add(name)
            left += ms
        if r.p50_ms:
            ax.plot([r.p50_ms, r.p50_ms], [y - 0.38, y + 0.38], color="black", linewidth=1.6,
                    label=None if "p50" in shown else "unprofiled p50")
            shown.add("p50")
    ax.set_yticks(range(len(ok)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per batch-1 call, profiled")
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(
        len(ok), 1) - 0.25), ncol=3)
    ax.set_title(_system_title(results, "where the batch-1 time goes"), fontsize=9)
    fig.tight_layout()
    return fig


STAGE_SHADES = ("0.2", "0.45", "0.92", "0.6", "0.75", "0.3", "0.85")
STAGE_HATCHES = ("", "//", "..", "xx", "\\\\", "++", "--")


def stage_figure(results: Results) -> Figure:
    """--mode pipeline: the mean milliseconds per image in each stage, stacked, one bar per
    engine, precision and thread count (the means add up to the mean end-to-end latency)."""
    stages = ("decode", "preprocess", "queue", "batch", "feed", "inference", "postprocess")
    bars = [(f"{(r.model + ': ') if r.model else ''}{r.engine} {r.precision} b{r.batch_size} "
             f"x{t.threads}", t) for r in results.pipelines if r.status == "ok" for t in r.runs]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(bars)), dpi=120)
    left = [0.0] * len(bars)
    for i, stage in enumerate(stages):
        widths = [t.stages[stage].mean_ms for _, t in bars]
        ax.barh(range(len(bars)), widths, left=left, label=stage, color=STAGE_SHADES[i],
                hatch=STAGE_HATCHES[i], edgecolor="black", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per image (lower is better)", fontsize=8)
    ax.legend(fontsize=7, ncol=len(stages), loc="upper center", bbox_to_anchor=(0.5, -0.1),
              frameon=False)
    ax.set_title(_system_title(results, "the whole pipeline, time per stage"), fontsize=9)
    fig.tight_layout()
    return fig


def served_figure(results: Results) -> Figure:
    """loadtest: p99 latency against throughput, one line per protocol and model (and server,
    where several were loaded together) through its concurrencies (each point labelled with its
    users), the knee ringed."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    lines: dict[tuple[str, str], list] = {}
    for p in results.loadtest:
        if p.status == "ok" and p.latency is not None and p.throughput_ips is not None:
            # servers loaded together: a line each, named by node
            at = f" @ {p.server.get('node') or p.url}" if p.together else ""
            lines.setdefault((p.protocol, p.model + at), []).append(p)
    for i, ((protocol, model), points) in enumerate(sorted(lines.items())):
        points.sort(key=lambda p: p.concurrency)
        x = [p.throughput_ips for p in points]
        y = [p.latency.p99_ms for p in points]
        ax.plot(x, y, marker="os^vD"[i % 5], color=str(0.15 + 0.5 * (i % 3) / 2),
                linestyle=("-", "--", ":")[i % 3], label=f"{protocol}: {model}")
        for p, xi, yi in zip(points, x, y, strict=True):
            ax.annotate(str(p.concurrency), (xi, yi), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
            if p.knee:
                ax.scatter([xi], [yi], s=160, facecolors="none", edgecolors="black")
    ax.set_xlabel("images/s, as the client counted them (higher is better)", fontsize=8)
    ax.set_ylabel("p99 latency, ms (lower is better)", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(_system_title(results, "served: p99 against throughput, users on the points, "
                               "the knee ringed"), fontsize=9)
    fig.tight_layout()
    return fig


def render(fig: Figure) -> dict[str, bytes]:
    """A figure as PNG and SVG bytes; the figure is closed."""
    out = {}
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext)
        out[ext] = buf.getvalue()
    plt.close(fig)
    return out


def study_figures(results: Results) -> dict[str, dict[str, bytes]]:
    """Figure 1 (throughput) and Figure 2 (latency), for the modes the run measured; a sweep's
    are lines over batch size."""
    if results.kind == "suite":
        return {name: render(suite_figure(results, name)) for name in ("throughput", "latency")
                if any(m.mode == name and m.status == "ok" for m in results.measurements)}
    if results.kind in ("sweep", "tune"):
        if not _series(results):
            return {}
        return {"throughput": render(sweep_throughput_figure(results)),
                "latency": render(sweep_latency_figure(results))}
    makers = (("throughput", throughput_figure), ("latency", latency_figure))
    out = {name: render(make(results)) for name, make in makers
           if any(m.mode == name for m in results.measurements)}
    if any(r.status == "ok" for r in results.profiles):
        out["profile"] = render(profile_figure(results))
    if any(r.status == "ok" for r in results.pipelines):
        out["stages"] = render(stage_figure(results))
    if any(p.status == "ok" for p in results.loadtest):
        out["served"] = render(served_figure(results))
    return out


def write_outputs(figures: dict[str, dict[str, bytes]], pages: dict[str, str],
                  directory: Path) -> list[Path]:
    """The figures (PNG, SVG) and each page (file name: text) in ``directory``, all or none (a
    report that cannot be written whole leaves the one there as it was); the paths written."""
    files = {directory / f"{name}.{ext}": data for name, made in figures.items()
             for ext, data in made.items()}
    files.update({directory / name: text.encode() for name, text in pages.items()})
    atomic_write_all(files)
    return list(files)
