"""What the command line prints besides live progress: a run's tables (the report's), and the
machine's engines, models and system facts. Text from data is printed literally, never read as
console markup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from visionbench.cache import Entry as CacheEntry
from visionbench.engines import PRECISIONS, EngineInfo
from visionbench.harness.peak import Peak
from visionbench.machine import Change, Check, MachineState
from visionbench.models.registry import Entry
from visionbench.results import Results
from visionbench.results.schema import LoadPoint

if TYPE_CHECKING:  # the statistics behind them (scipy) load when a comparison is made
    from visionbench.results.compare import Comparison
    from visionbench.results.fleet import FleetSummary
    from visionbench.scenarios.plan import DryRun


def print_results(console: Console, results: Results) -> None:
    from visionbench.reporting.console import print_summary

    print_summary(console, results)


def print_load_point(console: Console, p: LoadPoint) -> None:
    """One point of a loadtest, the moment it is measured."""
    who = p.protocol if not p.together else p.server.get("node") or p.url
    if p.latency is None or p.throughput_ips is None:
        console.print(f"{who} {p.concurrency} users: [red]{p.reason}[/]")
        return
    errors = sum(p.errors.values())
    if p.mode == "poisson":
        verdict = "[green]VALID[/]" if p.valid else f"[red]INVALID[/] ({p.reason})"
        console.print(f"{p.protocol} LoadGen Server at {p.target_qps:g}/s: {verdict}, "
                      f"{p.throughput_ips or 0:.1f} images/s, p50 {p.latency.p50_ms:.2f} ms, p99 "
                      f"{p.latency.p99_ms:.2f} ms" + (f", [red]{errors} errors[/]" if errors else ""))
        return
    console.print(f"{who} {p.concurrency} users: {p.throughput_ips:.1f} images/s, p50 "
                  f"{p.latency.p50_ms:.2f} ms, p99 {p.latency.p99_ms:.2f} ms"
                  + (f", [red]{errors} errors[/]" if errors else "")
                  + f", client CPU {p.client_cpu_cores:.2f} cores"
                  + ("" if p.ceiling_share is None else f", {p.ceiling_share:.0%} of the "
                     f"client's ceiling on {p.ceiling_model}"))


def print_comparison(console: Console, cmp: Comparison) -> None:
    from visionbench.reporting.comparison import print_comparison as print_it

    print_it(console, cmp)


def print_fleet(console: Console, summary: FleetSummary) -> None:
    from visionbench.reporting.fleet import print_fleet as print_it

    print_it(console, summary)


def print_system(console: Console, facts: dict) -> None:
    t = Table(show_header=False, title="System")
    for k, v in facts.items():
        t.add_row(k, Text(" ".join(v) if isinstance(v, list) else str(v)))
    console.print(t)


_VERDICT_STYLE = {"ok": "green", "warn": "bold red", "note": "yellow", "hidden": "dim"}


def print_state(console: Console, state: MachineState, checks: list[Check]) -> None:
    """The machine's state, each fact with its verdict and advice."""
    t = Table(title="Machine state (sampled for 0.25 s)")
    for col in ("fact", "value", "verdict", "advice"):
        t.add_column(col)
    for c in checks:
        t.add_row(c.name, Text(c.value), Text(c.verdict, style=_VERDICT_STYLE[c.verdict]),
                  Text(c.advice))
    console.print(t)


def print_peak(console: Console, peak: Peak) -> None:
    """The peak per precision that figures' "of peak" divides by, and what was not measured."""
    t = Table(title="Peak arithmetic rate (every core at once; " + (
        f"cached, measured {peak.measured_at})" if peak.cached else "measured now)"))
    for col in ("precision", "GOP/s", "instructions", "cores", "clean windows", "set aside"):
        t.add_column(col)
    for precision, r in peak.rates.items():
        t.add_row(precision, f"{r.gops:.1f}", r.isa, str(r.threads),
                  " ".join(f"{w:.1f}" for w in r.windows), str(r.disturbed))
    console.print(t)
    if (bw := peak.bandwidth) is not None:
        console.print(Text(f"Memory bandwidth: {bw.gbs:.1f} GB/s on {bw.threads} cores ({bw.method}; "
                           f"3 arrays of {bw.array_mib} MiB; clean windows "
                           f"{' '.join(f'{w:.1f}' for w in bw.windows)}, {bw.disturbed} set aside)"))
    for n in peak.notes:
        console.print(Text(n, style="yellow"))


def print_changes(console: Console, changes: list[Change], missing: list[str], reset: bool) -> None:
    """What ``sysinfo --tune`` or ``--reset`` changed, and what this machine does not offer."""
    for c in changes:
        console.print(Text(f"{'reset' if reset else 'set'} {c.knob}: {c.path}: {c.before} -> "
                           f"{c.after}"))
    if not changes:
        console.print(Text("nothing to change" if not reset else "nothing was changed"))
    for m in missing:
        console.print(Text(f"not offered here: {m}", style="yellow"))


def print_engines(console: Console, engines: list[EngineInfo]) -> None:
    t = Table(title="Engines on this machine")
    for col in ("engine", "installed", "versions", *PRECISIONS):
        t.add_column(col)
    reasons: list[str] = []
    for e in engines:
        if not e.installed:
            t.add_row(e.name, Text(f"no: {e.install}"), "", "", "", "")
            continue
        cells = []
        for p in PRECISIONS:
            s = e.support[p]
            if s.reason and s.reason not in reasons:
                reasons.append(s.reason)
            cells.append(Text(s.status + (f" [{reasons.index(s.reason) + 1}]" if s.reason else "")))
        t.add_row(e.name, "yes", Text(", ".join(f"{k} {v}" for k, v in e.versions.items())), *cells)
    console.print(t)
    for i, text in enumerate(reasons, 1):
        console.print(f"[{i}] {text}", markup=False, highlight=False)


def print_models(console: Console, models: dict[str, Entry], engines: list[EngineInfo]) -> None:
    import importlib.util

    t = Table(title="Built-in models")
    for col in ("model", "task", "parameters", "GFLOPs", "input", "weights", "engines here"):
        t.add_column(col, justify="right" if col in ("parameters", "GFLOPs") else "left")
    torch_here = importlib.util.find_spec("torch") is not None
    for name, entry in models.items():
        c = entry.card
        runs = [e.name for e in engines if e.installed and entry.has(e.definition)]  # type: ignore[arg-type]
        if c.built_with == "torch" and not torch_here:
            runs = ["none until built (building needs torch)"]
        t.add_row(Text(name), c.task, "-" if c.params is None else f"{c.params / 1e6:.2f} M",
                  "-" if c.gflop_per_image is None else f"{c.gflop_per_image:.2f}",
                  f"{c.channels}x{c.height}x{c.width}", c.weights, Text(", ".join(runs) or "none"))
    console.print(t)
    for name, entry in models.items():
        console.print(f"{name}: {entry.card.summary}; weights {entry.card.weights_source}",
                      markup=False, highlight=False)


def cache_question(root: str, entries: list[CacheEntry]) -> str:
    return f"delete {len(entries)} entries, {sum(e.size for e in entries) / 2**20:.1f} MiB, in {root}?"


def print_cache(console: Console, root: str, entries: list[CacheEntry]) -> None:
    table = Table(title=f"cache: {root}", title_justify="left")
    for col in ("entry", "what", "MiB", "made", "state"):
        table.add_column(col, justify="right" if col == "MiB" else "left")
    for e in entries:
        table.add_row(Text(e.path.name), Text(e.what), f"{e.size / 2**20:.1f}", e.created_at[:16],
                      Text(f"damaged: {e.problem}" if e.problem else "whole"))
    console.print(table)
    console.print(f"{len(entries)} entries, {sum(e.size for e in entries) / 2**20:.1f} MiB",
                  markup=False)


def print_dry_run(console: Console, plan: DryRun) -> None:
    """The planned measurements, one row each, the instance layouts and the output folder."""
    table = Table(title=f"planned (dry run, nothing measured): {plan.cfg.study.model}, "
                        f"{plan.cfg.launch.threads} threads", title_justify="left")
    for col in ("measurement", "batch", "here"):
        table.add_column(col, justify="right" if col == "batch" else "left")
    for t in plan.tasks:
        table.add_row(Text(t.id), str(t.batch), Text(t.support.status + (
            f": {t.support.reason}" if t.support.reason and t.support.status != "native" else "")))
    console.print(table)
    for mode, layout in plan.layouts.items():
        console.print(f"{mode}: " + (f"{layout.name} layout, {layout.describe()} (instances x "
                                     "cores)" if layout is not None else "one process, unpinned"),
                      markup=False)
    console.print(f"output: {plan.cfg.output} ({plan.output_note})", markup=False)
