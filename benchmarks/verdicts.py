"""How often compare's and tune's verdicts are wrong on this host (issue 28, item 6).

    python benchmarks/verdicts.py measure --runs 10 [-- RUN ARGS...]
    python benchmarks/verdicts.py simulate --window-cv 0.05 --run-cv 0.02 [--trials 200]
    python benchmarks/verdicts.py fake --window-cv 0.05 --run-cv 0.02 [--trials 200]

``measure`` runs the same ``visionbench run`` (default: ONNX Runtime, FP32 throughput on the
tiny ResNet-50 at the default timing) ``--runs`` times one after another and prints the host's
noise model: the spread between windows of a run and between runs beyond it (log scale), and the
real A/A verdicts of compare between consecutive runs. ``simulate`` judges 200 A/A trials and 200
trials of a 3% slowdown with compare's and tune's own verdict functions on figures drawn from the
model (``visionbench.testing.verdicts``), at the default budget and larger ones, and the smallest
change each resolves with 90% power. ``fake`` does the same end to end on the fake engine
(``visionbench.run`` twice per trial, its calls slowed by the model's factors, then
``visionbench.compare`` on the two runs)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from visionbench.scenarios.search import MAX_ROUNDS
from visionbench.settings import FULL
from visionbench.testing.verdicts import (
    Noise,
    Tally,
    compare_trials,
    compare_verdict,
    tune_trials,
)

from _common import visionbench_run

DEFAULT_ARGS = ["--engine", "onnxruntime", "--model", "resnet50-tiny", "--precision", "fp32",
                "--mode", "throughput", "--method", "reference"]
CHANGES = (0.03, 0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70)


def clean_windows(results: dict) -> list[float]:
    m = results["measurements"][0]
    return [w["throughput_ips"] for w in m["windows"] if w["disturbed"] is None]


def noise_model(runs: list[list[float]]) -> Noise:
    """Between windows (pooled within-run variance of the logs) and between runs (the run means'
    variance less what the windows explain), as coefficients of variation."""
    logs = [np.log(r) for r in runs if len(r) >= 2]
    within = float(np.mean([np.var(x, ddof=1) for x in logs]))
    n = float(np.mean([len(x) for x in logs]))
    between = float(np.var([x.mean() for x in logs], ddof=1)) - within / n
    return Noise(math.sqrt(math.expm1(within)), math.sqrt(math.expm1(max(between, 0.0))))


def measure(count: int, args: list[str]) -> None:
    visionbench_run(*args)  # fills the caches (model export) before the runs that count
    runs = []
    for i in range(count):
        runs.append(clean_windows(visionbench_run(*args)))
        print(f"run {i + 1}: " + " ".join(f"{x:.1f}" for x in runs[-1]), flush=True)
    noise = noise_model(runs)
    print(f"noise model: window_cv {noise.window_cv:.4f}, run_cv {noise.run_cv:.4f} "
          f"({count} runs of: visionbench run {' '.join(args)})")
    pairs = [compare_verdict(runs[i], runs[i + 1]) for i in range(0, count - 1, 2)]
    every = [compare_verdict(runs[i], runs[j]) for i in range(count) for j in range(i + 1, count)]
    for name, calls in (("consecutive disjoint pairs", pairs), ("every pair", every)):
        wrong = sum(c in ("faster", "slower") for c in calls)
        print(f"real A/A, {name}: {wrong} of {len(calls)} called a difference")
    print(json.dumps({"window_cv": noise.window_cv, "run_cv": noise.run_cv, "runs": runs}))


def _row(name: str, budget: str, trial: Callable[[float, int], Tally]) -> str:
    """One budget's line: A/A (seed 1), power against 3% slower, and the least change in
    CHANGES found with 90% power (seed 2; the 3% trial counted once)."""
    aa, slow = trial(0.0, 1), trial(-0.03, 2)
    mde = next((c for c in CHANGES if (slow if c == 0.03 else trial(-c, 2)).power >= 0.9), None)
    return (f"| {name} | {budget} | {aa.wrong}/{aa.trials} ({aa.called:.1%}, 95% bound "
            f"{aa.upper95():.1%}) | {slow.power:.0%} | "
            f"{f'over {CHANGES[-1]:.0%}' if mde is None else f'{mde:.0%}'} |")


def simulate(noise: Noise, trials: int) -> None:
    print(f"noise model: window_cv {noise.window_cv:.4f}, run_cv {noise.run_cv:.4f}; "
          f"{trials} trials each")
    print("| verdict | budget | A/A called a difference | power, 3% slower | smallest change "
          "with 90% power |\n|---|---|---|---|---|")
    default = FULL["throughput"].repeats
    for repeats in sorted({default, 5, 10, 30}):
        print(_row("compare", f"{repeats} windows a run" + (" (default)" if repeats == default
                                                            else ""),
                   lambda change, seed, r=repeats: compare_trials(noise, r, change, trials, seed)))
    for rounds in sorted({3, MAX_ROUNDS, 12, 30}):
        print(_row("tune", f"{rounds} rounds" + (" (most)" if rounds == MAX_ROUNDS else ""),
                   lambda change, seed, r=rounds: tune_trials(noise, r, change, trials, seed)))


def fake(noise: Noise, trials: int, duration: float) -> None:
    """A/A, 3%-slower and half-speed trials end to end: two fake-engine runs, then compare."""
    import visionbench

    calls: dict[float, list[str]] = {0.0: [], -0.03: [], -0.5: []}
    with tempfile.TemporaryDirectory() as tmp:
        for t in range(trials):
            for change in calls:
                dirs = []
                for side, speed in (("a", 1.0), ("b", 1.0 + change)):
                    os.environ["VISIONBENCH_FAKE_ENGINE"] = json.dumps({
                        "ms_per_batch": 2.0 / speed, "ms_per_image": 0.5 / speed,
                        "session_noise": noise.run_cv, "slow_noise": noise.window_cv,
                        "slow_noise_s": duration})
                    out = Path(tmp) / f"{t}-{change}-{side}"
                    visionbench.run(model="resnet50-tiny", engines="fake", precisions="fp32",
                                    modes="throughput", methods="reference", batch_size=4,
                                    duration=duration, warmup=1, calibration_samples=8,
                                    isolation="none", output=out)
                    dirs.append(out)
                cmp = visionbench.compare(dirs)
                cell = next(c for c in cmp.cells.values() if c.run == cmp.runs[1].label)
                calls[change].append(cell.verdict)
            print(f"trial {t + 1}: " + ", ".join(f"{c:+.0%} {v[-1]}" for c, v in calls.items()),
                  flush=True)
    aa = sum(v in ("faster", "slower") for v in calls[0.0])
    hits = {c: sum(v == "slower" for v in calls[c]) for c in (-0.03, -0.5)}
    print(f"fake engine, {trials} trials, {FULL['throughput'].repeats} windows of {duration} s: "
          f"A/A called a difference {aa}/{trials} "
          f"(95% bound {Tally(trials, 0, aa).upper95():.1%}); 3% slower found {hits[-0.03]}/"
          f"{trials}; half speed found {hits[-0.5]}/{trials}")


def main() -> None:
    argv = sys.argv[1:]
    run_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("measure", "simulate", "fake"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--window-cv", type=float)
    p.add_argument("--run-cv", type=float)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--duration", type=float, default=0.3, help="fake: seconds per window")
    a = p.parse_args(argv)
    if a.what == "measure":
        return measure(a.runs, run_args or DEFAULT_ARGS)
    if a.window_cv is None or a.run_cv is None:
        p.error(f"{a.what} needs --window-cv and --run-cv (from measure)")
    noise = Noise(a.window_cv, a.run_cv)
    if a.what == "simulate":
        return simulate(noise, a.trials)
    return fake(noise, a.trials, a.duration)


if __name__ == "__main__":
    main()
