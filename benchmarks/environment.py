"""The process environment as a tuning axis: does an allocator (tcmalloc, jemalloc), Intel's
OpenMP runtime with the reference scripts' settings, or GNU libgomp's wait policy change an
engine's figures? For each engine, `visionbench run` as shipped and under each environment
variant the engine proposes (``Engine.environment_candidates``: the allocators everywhere, the
OpenMP knobs where its inference runs on OpenMP), each run a fresh worker process with the
environment set, alternating round by round (the order rotated every round); prints each
variant's per-round ratio to the shipped environment (throughput: images/s; latency: shipped p50
over the variant's, so > 1 is faster), median [min-max], what the worker really ran with (the
library serving malloc and OpenMP, read inside it), and the paired test's verdict: the table for
docs/measurements.md, and what fills each engine's ``environment_knobs``.

    python benchmarks/environment.py [--rounds 5] [--engines torch,tensorflow,openvino,onnxruntime]
        [--precision fp32] [--model resnet50] [--duration 5]
"""

from __future__ import annotations

import argparse
import os

from visionbench.engines import get_engine
from visionbench.errors import VisionbenchError
from visionbench.results.compare import paired_verdict
from visionbench.scenarios.rounds import rotation

from _common import spread, visionbench_run


def figures(results: dict) -> dict[str, tuple[float, dict]]:
    """Each measurement's figure (images/s, or batch-1 p50 ms) and the environment it ran in."""
    return {("throughput" if m["mode"] == "throughput" else "latency"):
            (m["throughput_ips"] if m["mode"] == "throughput" else m["latency"]["p50_ms"],
             m["environment"] or {})
            for m in results["measurements"] if m["status"] == "ok"}


def ran_with(seen: dict) -> str:
    def base(p: str | None) -> str:
        return os.path.basename(p) if p else "-"
    return f"malloc {base(seen.get('malloc_from'))}, OpenMP {base(seen.get('openmp_from'))}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engines", default="torch,tensorflow,openvino,onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--duration", default="5")
    ap.add_argument("--batch-size", default="32")
    a = ap.parse_args()
    for name in a.engines.split(","):
        engine = get_engine(name)
        variants = {"shipped": []}
        for knob, env in engine.environment_candidates().items():
            try:
                env.variables()
            except VisionbenchError as e:
                print(f"{name}: {knob} left out: {e}")
                continue
            variants[knob] = env.flags()
        args = ["--engine", name, "--precision", a.precision, "--model", a.model,
                "--method", "reference", "--mode", "throughput,latency", "--duration", a.duration,
                "--repeats", "2", "--batch-size", a.batch_size, "--calibration-samples", "64"]
        got: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(a.rounds):
            for v in rotation(list(variants), r):
                got[v].append(figures(visionbench_run(*args, *variants[v])))
            print(f"{name} round {r + 1} of {a.rounds} done", flush=True)
        print(f"\n{name} {a.precision}, {a.rounds} alternating rounds of `visionbench run "
              f"{' '.join(args)}` as shipped and under each variant; ratio to shipped per round "
              "(> 1: faster)")
        print(f"{'variant':44} {'mode':10} {'figure':>22} {'ratio':>22} {'verdict':14} ran with")
        for v in variants:
            for mode in ("throughput", "latency"):
                rounds = [(s[mode], x[mode]) for s, x in zip(got["shipped"], got[v], strict=True)
                          if mode in s and mode in x]
                if not rounds:
                    print(f"{v:44} {mode:10} failed")
                    continue
                values = [x[0] for _, x in rounds]
                ratios = [x[0] / s[0] if mode == "throughput" else s[0] / x[0] for s, x in rounds]
                verdict = "-" if v == "shipped" else paired_verdict(ratios)[1]
                print(f"{v:44} {mode:10} {spread(values):>22} {spread(ratios):>22} {verdict:14} "
                      f"{ran_with(rounds[-1][1][1])}")


if __name__ == "__main__":
    main()
