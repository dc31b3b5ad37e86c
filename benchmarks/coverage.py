"""How often a figure's interval covers what other runs of the same study measure: N consecutive
``visionbench run``s (the default study unless arguments follow ``--``), then, for every figure
they share (each throughput and each latency percentile with its interval), how many runs'
intervals cover the mean of all N runs' figures and how many cover the next run's figure. Also
what would make the runs not quiet: disturbed windows, fidelity flags, figures left disturbed.

    python benchmarks/coverage.py --runs 5 --keep /tmp/cov [-- RUN ARGS...]
    python benchmarks/coverage.py --from /tmp/cov/run-*      # runs already made

An interval covering the next run's figure is the stricter test: it must hold both runs' noise
while the interval only speaks for its own run's windows."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PERCENTILES = ("p50", "p90", "p99", "p999")


def figures(results: dict) -> dict[str, tuple[float, tuple[float, float] | None]]:
    """Every figure of a run with its interval: ``{name: (value, (low, high) or None)}``."""
    out = {}
    for m in results["measurements"]:
        if m["status"] != "ok":
            continue
        if m.get("throughput_ips") is not None and m["mode"] == "throughput":
            out[f"{m['id']} throughput"] = (m["throughput_ips"], m.get("throughput_ci95"))
        lat = m.get("latency")
        if lat and m["mode"] == "latency":
            for p in PERCENTILES:
                if lat.get(f"{p}_ms") is not None:
                    out[f"{m['id']} {p}"] = (lat[f"{p}_ms"], lat.get(f"{p}_ci"))
    return out


def quiet(results: dict) -> list[str]:
    """What was not quiet about a run: windows set aside, figures left disturbed, flags."""
    notes = []
    for m in results["measurements"]:
        hit = [w for w in m.get("windows", []) if w.get("disturbed")]
        if hit:
            notes.append(f"{m['id']}: {len(hit)} window(s) disturbed ({hit[0]['disturbed']})")
        if m.get("disturbed"):
            notes.append(f"{m['id']}: figure left disturbed")
        for flag in (m.get("fidelity") or {}).get("flags", []):
            notes.append(f"{m['id']}: FLAGGED {flag}")
    return notes


def make_runs(count: int, keep: Path, args: list[str]) -> list[Path]:
    keep.mkdir(parents=True, exist_ok=True)
    dirs = []
    for i in range(count):
        out = keep / f"run-{i + 1}"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "visionbench", "run", *args, "--output",
                               str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"run {i + 1} failed: {proc.stderr.strip()[-500:]}")
        print(f"run {i + 1}: {time.monotonic() - t0:.0f} s -> {out}", flush=True)
        dirs.append(out)
    return dirs


def covers(ci: tuple[float, float] | None, x: float) -> bool:
    return ci is not None and ci[0] <= x <= ci[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--keep", type=Path, default=Path("coverage-runs"),
                   help="where the runs' folders are written")
    p.add_argument("--from", dest="existing", type=Path, nargs="+",
                   help="read these run folders instead of running")
    p.add_argument("args", nargs="*", help="visionbench run's arguments (after --)")
    opts = p.parse_args()
    dirs = opts.existing or make_runs(opts.runs, opts.keep, opts.args)
    runs = [json.loads((d / "results.json").read_text()) for d in dirs]
    for d, r in zip(dirs, runs, strict=True):
        sysfacts = r.get("system", {})
        cpu = f"{sysfacts.get('cpu_model', '')} ({sysfacts.get('cpu_family_model_stepping', '')})"
        print(f"{d}: {cpu}; " + ("; ".join(quiet(r)) or "quiet: no window disturbed, no flag"))
    per_run = [figures(r) for r in runs]
    names = [n for n in per_run[0] if all(n in f for f in per_run)]
    total_mean = total_next = n_mean = n_next = 0
    print(f"\n{'figure':44} {'mean of runs':>12} {'half-widths':>16} {'covers mean':>11} "
          f"{'covers next':>11}")
    for name in names:
        values = [f[name][0] for f in per_run]
        cis = [f[name][1] for f in per_run]
        mean = statistics.fmean(values)
        hits_mean = sum(covers(ci, mean) for ci in cis)
        hits_next = sum(covers(cis[i], values[i + 1]) for i in range(len(runs) - 1))
        halves = [max(ci[1] - v, v - ci[0]) / v * 100 for v, ci in zip(values, cis, strict=True)
                  if ci is not None]
        width = f"{min(halves):.1f}-{max(halves):.1f}%" if halves else "none"
        print(f"{name:44} {mean:12.2f} {width:>16} {hits_mean:>5} of {len(runs):<3} "
              f"{hits_next:>5} of {len(runs) - 1:<3}")
        total_mean += hits_mean
        n_mean += len(runs)
        total_next += hits_next
        n_next += len(runs) - 1
    if n_mean and n_next:
        print(f"\nall figures: the interval covers the mean of the runs in {total_mean} of {n_mean} "
              f"({total_mean / n_mean:.0%}), the next run's figure in {total_next} of {n_next} "
              f"({total_next / n_next:.0%})")


if __name__ == "__main__":
    main()
