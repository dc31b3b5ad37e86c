"""Does measuring every engine in one process change any figure, against each engine in a worker
process of its own? The same `visionbench run` over several engines, OpenVINO last (so that it is
measured after PyTorch's, TensorFlow's and ONNX Runtime's runtimes were loaded and used in the
same process), with `--isolation none` and `--isolation engine`, alternating round by round (the
order reversed every other round); prints each cell's figure per side and the per-round ratio
isolated / in one process (throughput: images/s; latency: p50, in one process / isolated, so
> 1 is faster isolated), median [min-max], and each side's peak memory while timing.

    python benchmarks/isolation.py [--rounds 4] [--engines torch-eager,tensorflow,onnxruntime,openvino]
"""

from __future__ import annotations

import argparse
import statistics

from _common import spread, visionbench_run


def figures(results: dict) -> dict[str, tuple[float, float]]:
    """Each measurement's figure (images/s, or batch-1 p50 ms) and its peak MiB while timing."""
    out = {}
    for m in results["measurements"]:
        if m["status"] != "ok":
            continue
        value = m["throughput_ips"] if m["mode"] == "throughput" else m["latency"]["p50_ms"]
        out[m["id"]] = (value, m["memory"]["peak_mib"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--engines", default="torch-eager,tensorflow,onnxruntime,openvino")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--duration", default="5")
    a = ap.parse_args()
    args = ["--engine", a.engines, "--precision", a.precision, "--method", "reference",
            "--duration", a.duration, "--repeats", "3", "--batch-size", "32"]
    sides = ("none", "engine")
    got: dict[str, list[dict[str, tuple[float, float]]]] = {s: [] for s in sides}
    for r in range(a.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            got[side].append(figures(visionbench_run(*args, "--isolation", side)))
            print(f"round {r + 1}: --isolation {side} done", flush=True)
    print(f"\n{a.rounds} alternating rounds; `visionbench run {' '.join(args)}`, "
          "--isolation none against engine")
    print(f"{'measurement':38} {'in one process':>22} {'isolated':>22} {'isolated vs one':>22} "
          f"{'peak MiB one/iso':>18}")
    for key in got["engine"][0]:
        rounds = [(n[key], e[key]) for n, e in zip(got["none"], got["engine"], strict=True)
                  if key in n and key in e]
        if not rounds:
            continue
        one = [n[0] for n, _ in rounds]
        iso = [e[0] for _, e in rounds]
        ratios = [e / n if "throughput" in key else n / e for n, e in zip(one, iso, strict=True)]
        peaks = (statistics.median(n[1] for n, _ in rounds), statistics.median(e[1] for _, e in rounds))
        print(f"{key:38} {spread(one):>22} {spread(iso):>22} {spread(ratios):>22} "
              f"{peaks[0]:8.0f}/{peaks[1]:<8.0f}")


if __name__ == "__main__":
    main()
