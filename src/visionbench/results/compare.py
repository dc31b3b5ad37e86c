"""Comparison of runs (other machines, engines, versions) against a baseline: the ratio of every
measurement both runs made, and whether the difference is beyond the noise.

Like pyperf's compare_to, a difference is called only when a test says it is unlikely to be chance,
at ALPHA = 0.01 (so that 200 A/A trials bound the false-positive rate under 5%:
benchmarks/verdicts.py). Throughput compares the windows' images/s on a log scale, with each run's
level moving from run to run beyond what its windows show (RUN_NOISE_RATIO times their spread,
or a fixed ``run_noise``): a run samples the host's state once, and on a shared VM that state
moves whole runs (docs/method.md, "Verdicts validated"). Latency compares every timed inference
(Mann-Whitney U): thousands of samples make tiny shifts "significant", and samples within one
run are not independent, so a difference must also exceed the spread between repeats of either
run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats

from visionbench.errors import VisionbenchError
from visionbench.results import CellKey, Measurement, Results, load, load_raw
from visionbench.results.fleet import NODES_DIR, is_fleet, node_runs
from visionbench.settings import RUN_NOISE_RATIO

ALPHA = 0.01
#: Confidence of the intervals compare shows: one that leaves out 1 goes with a called difference.
CI_LEVEL = 1 - ALPHA
#: Latency samples kept per side for the bootstrap of the ratio's confidence interval.
MAX_BOOTSTRAP_SAMPLES = 2000
Key = CellKey
Verdict = Literal["faster", "slower", "within noise", "cannot tell"]


@dataclass
class Run:
    label: str
    path: Path
    results: Results

    def cells(self) -> dict[Key, Measurement]:
        return {self.results.key(m): m for m in self.results.measurements}


@dataclass
class Cell:
    """One measurement of one run set against the baseline's. ``speedup`` > 1 means faster:
    images/s ratio for throughput, baseline p50 / this p50 for latency."""

    key: Key
    run: str
    value: float | None  # images/s (throughput) or p50 ms (latency)
    p99_ms: float | None = None
    speedup: float | None = None
    ci: tuple[float, float] | None = None  # CI_LEVEL confidence interval of the speedup
    p_value: float | None = None
    test: str | None = None
    verdict: Verdict | None = None
    why: str = ""
    differences: list[str] = field(default_factory=list)  # e.g. a batch unlike the baseline's
    #: The measurement's peak resident memory while timing, and its energy per image (if any).
    peak_mib: float | None = None
    joules_per_image: float | None = None


@dataclass
class Comparison:
    baseline: str
    runs: list[Run]
    keys: list[Key]
    cells: dict[tuple[Key, str], Cell]
    differences: dict[str, list[str]]  # run label -> how its setting differs from the baseline's
    run_noise: float | None = None  # None: RUN_NOISE_RATIO x the windows' spread

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "runs": {r.label: str(r.path) for r in self.runs},
            "differences": self.differences,
            "alpha": ALPHA,
            "run_noise": self.run_noise,
            "cells": [
                {"engine": c.key.engine, "precision": c.key.precision, "mode": c.key.mode,
                 "model": c.key.model, "method": c.key.method, "run": c.run,
                 "value": c.value, "unit": "images/s" if c.key.mode == "throughput" else "ms (p50)",
                 "p99_ms": c.p99_ms, "speedup": c.speedup, "ci": c.ci, "ci_level": CI_LEVEL,
                 "p_value": c.p_value,
                 "test": c.test, "verdict": c.verdict, "why": c.why, "differences": c.differences,
                 "peak_mib": c.peak_mib, "joules_per_image": c.joules_per_image}
                for c in self.cells.values()
            ],
        }


def _label(path: Path) -> str:
    """A run's directory name; a fleet node's run: fleet/node."""
    p = path.resolve()
    return f"{p.parent.parent.name}/{p.name}" if p.parent.name == NODES_DIR and is_fleet(
        p.parent.parent) else p.name


def _labels(paths: list[Path]) -> list[str]:
    names = [_label(p) for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def load_runs(paths: list[Path]) -> list[Run]:
    runs = [Run(label, p, load(p)) for label, p in zip(_labels(paths), paths, strict=True)]
    for r in runs:
        if r.results.kind not in ("study", "suite"):
            raise VisionbenchError(
                f"{r.path} is a {r.results.kind} run: compare matches one measurement per model, "
                "engine, precision, mode and method, so it takes study and suite runs")
    return runs


def _flat(results: Results) -> dict[str, str]:
    s, c = results.system, results.config
    out = {
        "model": f"{results.model.name} ({results.model.sha256[:12]})",
        "cpu": s.cpu_model,
        "cores": f"{s.physical_cores} cores / {s.cpus_available} used",
        "isa": " ".join(s.isa_flags),
        "memory_gib": str(s.memory_total_gib),
        "os": s.os,
        "host": s.hostname,
    }
    for k in ("threads", "batch_size", "duration", "iterations", "repeats", "warmup", "quick",
              "calibration_samples", "seed", "weights", "allow_emulated"):
        out[f"--{k.replace('_', '-')}"] = str(getattr(c, k))
    out.update({f"version {k}": v for k, v in results.software.items()})
    return out


def setting_differences(base: Results, other: Results) -> list[str]:
    a, b = _flat(base), _flat(other)
    return [f"{k}: {a.get(k, '—')} → {b.get(k, '—')}" for k in dict.fromkeys([*a, *b])
            if a.get(k) != b.get(k)]


def throughput_stats(base: Sequence[float], other: Sequence[float], run_noise: float | None = None
                     ) -> tuple[float | None, tuple[float, float] | None, str]:
    """p-value and CI_LEVEL interval of the ratio other / base from the two runs' window figures:
    a t-test on their logs whose variance is the windows' pooled spread plus each run's level,
    which no run's own windows can show: ``run_noise`` (a coefficient of variation) where given,
    else RUN_NOISE_RATIO times the windows' spread."""
    x, y = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(other, dtype=float))
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return None, None, "needs 2 or more repeats in both runs"
    if np.ptp(x) == 0 and np.ptp(y) == 0 and not run_noise:
        return None, None, "repeats identical: no spread to judge"
    df = n + m - 2
    spread = ((n - 1) * np.var(x, ddof=1) + (m - 1) * np.var(y, ddof=1)) / df
    windows = spread * (1 / n + 1 / m)
    if run_noise is None:
        runs = 2 * RUN_NOISE_RATIO ** 2 * spread
    else:
        runs = 2 * np.log1p(run_noise ** 2)
        # Satterthwaite: a given run term is not estimated, so only the windows' share costs
        # degrees of freedom.
        df = float((windows + runs) ** 2 / (windows ** 2 / df)) if windows else np.inf
    se = float(np.sqrt(windows + runs))
    d = float(np.mean(y) - np.mean(x))
    p = float(2 * stats.t.sf(abs(d) / se, df))
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return p, (float(np.exp(d - half)), float(np.exp(d + half))), ""


def _ratio_of_medians_ci(base: np.ndarray, other: np.ndarray, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    if len(base) > MAX_BOOTSTRAP_SAMPLES:
        base = rng.choice(base, MAX_BOOTSTRAP_SAMPLES, replace=False)
    if len(other) > MAX_BOOTSTRAP_SAMPLES:
        other = rng.choice(other, MAX_BOOTSTRAP_SAMPLES, replace=False)
    res = stats.bootstrap(
        (base, other), lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
        n_resamples=1000, method="percentile", vectorized=True, random_state=rng,
        confidence_level=CI_LEVEL,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _noise(a: Measurement, b: Measurement) -> float:
    return max(a.cv or 0.0, b.cv or 0.0)


def _figure(m: Measurement, mode: str) -> float | None:
    """A measurement's figure: its throughput, or its median latency."""
    return m.throughput_ips if mode == "throughput" else m.latency.p50_ms if m.latency else None


def compare_cell(key: Key, base_run: Run, base: Measurement, run: Run, m: Measurement,
                 run_noise: float | None = None) -> Cell:
    mode = key.mode
    # Threads come from the run's settings (listed per run); the batch may differ per cell.
    diffs = [f"batch {base.batch_size} → {m.batch_size}"] if base.batch_size != m.batch_size else []
    if m.status != "ok":
        return Cell(key, run.label, None, why=f"{m.status}: {m.reason}", differences=diffs)
    value = _figure(m, mode)
    cell = Cell(key, run.label, value, p99_ms=m.latency.p99_ms if m.latency else None,
                differences=diffs, peak_mib=m.memory.peak_mib if m.memory else None,
                joules_per_image=m.energy.joules_per_image if m.energy else None)
    if run is base_run:
        return cell
    if base.status != "ok":
        cell.why = f"baseline {base.status}"
        return cell
    if not value or not (base_value := _figure(base, mode)):  # a file without it, or of 0
        cell.why = "no figure above 0 to compare"
        return cell
    if mode == "throughput":
        cell.speedup = value / base_value
        p, cell.ci, why = throughput_stats(base.throughput_per_repeat,
                                           m.throughput_per_repeat, run_noise)
        cell.test = f"t-test over the windows' logs, with {noise_text(run_noise)}"
    else:
        x, y = load_raw(base_run.path, base), load_raw(run.path, m)
        cell.speedup = base_value / value
        p = float(stats.mannwhitneyu(y, x, alternative="two-sided").pvalue)
        cell.test = "Mann-Whitney U over inferences"
        cell.ci = _ratio_of_medians_ci(x, y, seed=len(x) + len(y))
        why = ""
    cell.p_value = p
    cell.verdict, cell.why = verdict(p, cell.speedup, None if mode == "throughput" else
                                     _noise(base, m), why)
    if hit := [r.label for r, x in ((base_run, base), (run, m)) if x.disturbed]:
        cell.why += (f"{'; ' if cell.why else ''}rests on disturbed figures ({', '.join(hit)}: "
                     "fewer clean windows than asked)")
    return cell


def paired_verdict(ratios: list[float]) -> tuple[float | None, Verdict, str]:
    """Whether B is faster than A from paired rounds (each round measured both, one after the
    other, in an order that changes between rounds): ``ratios`` are B / A per round. A two-sided
    paired t-test on the ratios' logs at ALPHA: load drifting over the rounds moves both sides of
    a round alike, so it cannot make a difference the rounds agree on. (A sign test cannot reach
    ALPHA in fewer than 8 rounds.)"""
    r = np.asarray(ratios, dtype=float)
    if len(r) < 3:
        return None, "cannot tell", f"{len(r)} paired rounds; needs 3 or more"
    spread = f"ratios {r.min():.3f}-{r.max():.3f} over {len(r)} rounds, median {np.median(r):.3f}"
    logs = np.log(r)
    if np.ptp(logs) == 0:
        return (1.0, "within noise", spread) if logs[0] == 0 else (
            0.0, "faster" if logs[0] > 0 else "slower", f"every round {r[0]:.3f}; {spread}")
    p = float(stats.ttest_1samp(logs, 0.0).pvalue)
    ups = int((r > 1).sum())
    said = f"{ups} of {len(r)} rounds faster (paired t-test p = {p:.2g}); {spread}"
    if p >= ALPHA:
        return p, "within noise", said
    return p, ("faster" if logs.mean() > 0 else "slower"), said


def verdict(p: float | None, speedup: float, noise: float | None, why: str = ""
            ) -> tuple[Verdict, str]:
    """Faster or slower only when the test says so and, where ``noise`` (the repeats' spread) is
    given, the change exceeds it."""
    if p is None:
        return "cannot tell", why
    if p >= ALPHA:
        return "within noise", f"p = {p:.2g} ≥ {ALPHA}"
    if noise is None:
        return ("faster" if speedup > 1 else "slower"), f"p = {p:.2g} < {ALPHA}"
    if abs(speedup - 1) <= noise:
        return "within noise", (f"p = {p:.2g}, but the change ({abs(speedup - 1):.1%}) is within "
                                f"the spread between repeats ({noise:.1%})")
    return ("faster" if speedup > 1 else "slower"), (
        f"p = {p:.2g}; beyond the spread between repeats ({noise:.1%})")


def _expand(paths: list[Path]) -> list[Path]:
    """A fleet directory stands for its nodes' runs."""
    out: list[Path] = []
    for p in paths:
        if not is_fleet(p):
            out.append(p)
        elif not (runs := node_runs(p)):
            raise VisionbenchError(f"the fleet run {p} holds no node's results")
        else:
            out += runs
    return out


def noise_text(run_noise: float | None) -> str:
    """How compare took the runs' own movement: for its notes and tables."""
    return (f"{run_noise:.1%} run-to-run noise" if run_noise is not None else
            f"run-to-run noise {RUN_NOISE_RATIO:g}x the windows' spread")


def compare(paths: list[Path], baseline: Path | None = None, run_noise: float | None = None
            ) -> Comparison:
    """Every run against the baseline (``baseline``, else the first run); a fleet run counts as
    its nodes' runs (a fleet baseline: its first node). ``run_noise``: ``throughput_stats``."""
    if run_noise is not None and not 0 <= run_noise < 1:
        raise VisionbenchError(f"run noise (--run-noise) must be at least 0% and under 100%, not "
                               f"{run_noise:.0%}")
    paths = _expand(paths)
    if baseline is not None:
        baseline = _expand([baseline])[0]
        paths = [baseline, *[p for p in paths if p.resolve() != baseline.resolve()]]
    if len(paths) < 2:
        raise VisionbenchError("compare needs at least two runs (or one run and --baseline)")
    runs = load_runs(paths)
    base_run = runs[0]
    base_cells = base_run.cells()
    keys = list(base_cells)
    for run in runs[1:]:
        shared = [k for k, m in run.cells().items()
                  if m.status == "ok" and k in base_cells and base_cells[k].status == "ok"]
        if not shared:
            raise VisionbenchError(
                f"{run.path} and the baseline {base_run.path} have no measurement in common "
                "(same model, engine, precision, mode and method, both measured)"
            )
        keys += [k for k in run.cells() if k not in keys]
    cells: dict[tuple[Key, str], Cell] = {}
    for run in runs:
        mine = run.cells()
        for key in keys:
            if key in mine and key in base_cells:
                cells[key, run.label] = compare_cell(key, base_run, base_cells[key], run, mine[key],
                                                       run_noise)
            elif key in mine:
                m = mine[key]
                value = (m.throughput_ips if key.mode == "throughput" else
                         (m.latency.p50_ms if m.latency else None))
                cells[key, run.label] = Cell(key, run.label, value, why="not in the baseline")
    differences = {r.label: setting_differences(base_run.results, r.results) for r in runs[1:]}
    return Comparison(base_run.label, runs, keys, cells, differences, run_noise)
