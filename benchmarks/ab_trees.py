"""Two visionbench source trees (say, today's main and a branch) run the same command in
alternating rounds, one after the other, never at once: each run's wall time and its figures
(throughput or batch-1 p50 per measurement), the per-round ratios B/A, and the measurements
one tree made and the other did not. Ratios within a round share the machine's state of the
moment; the spread over the rounds says what a difference must exceed to mean something.

    python benchmarks/ab_trees.py --rounds 5 /tmp/ab/old /tmp/ab/new [-- RUN ARGS...]

Each tree runs as ``python -m visionbench run ARGS --output DIR`` with its ``src`` first on the
import path (this interpreter's packages otherwise). A warm-up run of each tree first fills the
caches (model export, INT8 quantization) so that no timed round pays for them.
``--separate-caches`` gives each tree a cache folder of its own (``VISIONBENCH_CACHE``): trees
that build different revisions of a model would otherwise replace each other's cached files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import spread


def run(tree: Path, args: list[str], save: Path | None = None, cache: Path | None = None
        ) -> tuple[float, dict[str, float], list[str]]:
    """Wall seconds of one run, its figure per measurement id, and its summary's section titles;
    its console output written to ``save`` where given."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        if cache is not None:
            env["VISIONBENCH_CACHE"] = str(cache)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "visionbench", "run", *args, "--output",
                               str(out)], capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        if save is not None:
            save.write_text(proc.stdout)
        if proc.returncode != 0:
            raise SystemExit(f"{tree}: visionbench failed: {proc.stderr.strip()[-500:]}")
        r = json.loads((out / "results.json").read_text())
        titles = [ln[3:] for ln in (out / "summary.md").read_text().splitlines()
                  if ln.startswith("## ")]
    figures = {}
    for m in r["measurements"]:
        if m["status"] != "ok":
            continue
        figures[m["id"]] = (m["throughput_ips"] if m["mode"] == "throughput"
                            else m["latency"]["p50_ms"])
    return wall, figures, titles


def without_duration(args: list[str]) -> list[str]:
    """``args`` less any ``--duration`` (the warm-up counts iterations, which excludes it)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--duration":
            skip = True
        elif not a.startswith("--duration="):
            out.append(a)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="tree A (the baseline)")
    p.add_argument("b", type=Path, help="tree B")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--save", type=Path, help="where to write tree B's last console output")
    p.add_argument("--separate-caches", action="store_true",
                   help="a cache folder of each tree's own, kept for the session")
    p.add_argument("args", nargs="*", help="visionbench run's arguments (after --)")
    opts = p.parse_args()
    trees = {"A": opts.a, "B": opts.b}
    root = Path(tempfile.mkdtemp(prefix="ab-caches-")) if opts.separate_caches else None
    caches = {name: root / name if root else None for name in trees}
    for name, tree in trees.items():  # one batch per measurement: the caches filled, little else
        wall, _, titles = run(tree, [*without_duration(opts.args), "--iterations", "1",
                                     "--repeats", "1", "--warmup", "0"], cache=caches[name])
        print(f"warm-up {name}: {wall:.0f} s; summary.md sections: {'; '.join(titles)}", flush=True)
    walls: dict[str, list[float]] = {"A": [], "B": []}
    figs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for i in range(opts.rounds):
        order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
        for name in order:
            last = name == "B" and i == opts.rounds - 1
            wall, figures, _ = run(trees[name], opts.args, opts.save if last else None,
                                   caches[name])
            walls[name].append(wall)
            figs[name].append(figures)
        print(f"round {i + 1} ({' then '.join(order)}): A {walls['A'][-1]:.0f} s, "
              f"B {walls['B'][-1]:.0f} s, B/A {walls['B'][-1] / walls['A'][-1]:.3f}", flush=True)
    ratios = [b / a for a, b in zip(walls["A"], walls["B"], strict=True)]
    print(f"\nwall seconds: A {spread(walls['A'])}, B {spread(walls['B'])}; "
          f"B/A per round {spread(ratios)}")
    only_a = sorted(set(figs["A"][0]) - set(figs["B"][0]))
    only_b = sorted(set(figs["B"][0]) - set(figs["A"][0]))
    print(f"measurements only A made: {only_a or 'none'}; only B made: {only_b or 'none'}")
    print("\nper measurement, B/A per round (throughput images/s, or batch-1 p50 ms):")
    for key in sorted(set(figs["A"][0]) & set(figs["B"][0])):
        per = [fb[key] / fa[key] for fa, fb in zip(figs["A"], figs["B"], strict=True)
               if key in fa and key in fb]
        a = spread([f[key] for f in figs["A"] if key in f])
        b = spread([f[key] for f in figs["B"] if key in f])
        print(f"  {key}: A {a}, B {b}, B/A {spread(per)}")


if __name__ == "__main__":
    main()
