"""visionbench's OpenVINO numbers against OpenVINO's own benchmark_app on the very same file.

By default both run one synchronous request, one stream, the same threads, batch and inference
precision: the harness against the engine's own loop. With ``--best``, benchmark_app runs at its
best (``-hint throughput -b <the reference batch>``; ``-hint latency -b 1``) against both study
methods of ``visionbench run`` (reference, engine), the setting ``visionbench tune`` named (from
``--tune DIR``, or a tune run at its default budget made first) and the default run's batch-1
latency. Rounds alternate the tools, the order rotating, so drifting load hits all alike; each
figure is the median of the per-round ratios to benchmark_app, with their range.

    python benchmarks/vs_benchmark_app.py [--duration 10] [--rounds 3] [--precision fp32,int8]
    python benchmarks/vs_benchmark_app.py --best [--rounds 5] [--tune DIR]
    python benchmarks/vs_benchmark_app.py --best --latency-only --precision int8 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from visionbench.settings import REFERENCE_BATCH
from visionbench.sysinfo import available_cpus, cpu_features

from _common import median, spread, visionbench_run


def benchmark_app(
    model: Path, batch: int, threads: int, precision: str, duration: float, hint: str | None = None,
) -> tuple[float, float]:
    """benchmark_app's images/s and median latency: one synchronous request on one stream, or,
    with ``hint``, OpenVINO's hint as benchmark_app runs it (its own streams and requests)."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    cmd = [exe, "-m", str(model), "-d", "CPU", "-shape", f"[{batch},3,224,224]",
           "-t", str(round(duration)), "-infer_precision", precision]
    if hint is None:
        cmd += ["-api", "sync", "-nireq", "1", "-nstreams", "1", "-nthreads", str(threads),
                "-hint", "none"]
    else:
        cmd += ["-hint", hint]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    fps = float(re.search(r"Throughput:\s+([\d.]+)\s+FPS", out).group(1))
    p50 = float(re.search(r"Median:\s+([\d.]+)\s+ms", out).group(1))
    return fps, p50


def model_file(precision: str) -> Path:
    """The file visionbench runs for ``precision``: the built model, or its cached NNCF IR."""
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines.openvino import _quantize
    from visionbench.models import resolve
    from visionbench.settings import CALIBRATION_SAMPLES

    spec = resolve()
    if precision != "int8":
        return spec.path
    return _quantize(spec, synthetic_calibration(spec, CALIBRATION_SAMPLES))


def tuned_commands(tune_dir: Path | None, precisions: list[str]) -> dict[str, list[str]]:
    """The ``visionbench run`` arguments of each precision's tuned winner: from ``tune_dir``, or
    from a tune run at its default budget made now."""
    if tune_dir is None:
        tune_dir = Path(tempfile.mkdtemp()) / "tune"
        print(f"visionbench tune (default budget) -> {tune_dir}", flush=True)
        subprocess.run([sys.executable, "-m", "visionbench", "tune", "--engine", "openvino",
                        "--precision", ",".join(precisions), "--output", str(tune_dir)],
                       check=True, capture_output=True)
    tune = json.loads((tune_dir / "results.json").read_text())["tune"]
    out = {}
    for t in tune:
        print(f"tune {t['precision']}: {t['winner_command']} ({t['verdict']}, "
              f"{t['speedup_vs_default'] or 0:.3f}x its default; {t['explored']} explored, "
              f"{t['rounds']} rounds, {t['seconds_used']:.0f} s)")
        out[t["precision"]] = shlex.split(t["winner_command"])[2:]
    return out


def best(args: argparse.Namespace, threads: int) -> None:
    """benchmark_app at its best against both study methods, tune's setting and batch-1 latency."""
    precisions = args.precision.split(",")
    tuned = {} if args.latency_only else tuned_commands(args.tune, precisions)
    timing = ["--duration", str(args.duration), "--repeats", "1"]
    print(f"\n{args.rounds} rounds of {args.duration:.0f} s, the order rotating and reversing; ratios to "
          "benchmark_app per round: median [min-max]\n")
    for precision in precisions:
        batch = REFERENCE_BATCH[precision]
        infer = "bf16" if precision == "bf16" else "f32"
        model = model_file(precision)

        def vb(*extra: str) -> Callable[[], tuple[float, float]]:
            def go() -> tuple[float, float]:
                m = visionbench_run(*extra, *timing)["measurements"][0]
                return m["throughput_ips"], m["latency"]["p50_ms"]
            return go

        def ba(batch: int, hint: str, model: Path = model, infer: str = infer
               ) -> Callable[[], tuple[float, float]]:
            return lambda: benchmark_app(model, batch, threads, infer, args.duration, hint)

        tools: dict[str, Callable[[], tuple[float, float]]] = {
            "benchmark_app -hint throughput": ba(batch, "throughput"),
            "run, reference method": vb("--engine", "openvino", "--precision", precision,
                                        "--mode", "throughput", "--method", "reference"),
            "run, engine method": vb("--engine", "openvino", "--precision", precision,
                                     "--mode", "throughput", "--method", "engine"),
            "tune's setting": vb(*tuned.get(precision, [])),
            "benchmark_app -hint latency -b 1": ba(1, "latency"),
            "run, batch-1 latency": vb("--engine", "openvino", "--precision", precision,
                                       "--mode", "latency"),
        }
        if args.latency_only:
            tools = {k: v for k, v in tools.items() if "latency" in k}
        got: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
        names = list(tools)
        for i in range(args.rounds):
            # The start rotates and every other round runs backwards, so no tool always follows
            # the same one (a process right after a multi-GB one can pay for its teardown).
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order if i % 2 == 0 else order[::-1]:
                got[name].append(tools[name]())
        if not args.latency_only:
            base = got["benchmark_app -hint throughput"]
            print(f"{precision} (batch {batch}): benchmark_app -hint throughput "
                  f"{spread([b[0] for b in base])} img/s")
            for name in ("run, reference method", "run, engine method", "tune's setting"):
                ratios = [v[0] / b[0] for v, b in zip(got[name], base, strict=True)]
                print(f"  {name:28} {spread([v[0] for v in got[name]]):>24} img/s   "
                      f"x{spread(ratios)}")
        else:
            print(f"{precision}:")
        lat_ba, lat_vb = got["benchmark_app -hint latency -b 1"], got["run, batch-1 latency"]
        ratios = [v[1] / b[1] for v, b in zip(lat_vb, lat_ba, strict=True)]
        print(f"  batch-1 p50: benchmark_app {spread([b[1] for b in lat_ba])} ms, visionbench "
              f"{spread([v[1] for v in lat_vb])} ms; visionbench / benchmark_app x{spread(ratios)}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="fp32,bf16,int8" if cpu_features().bf16 else "fp32,int8")
    ap.add_argument("--best", action="store_true",
                    help="benchmark_app at its best against both methods and tune's setting")
    ap.add_argument("--tune", type=Path, help="--best: a tune run to take the settings from")
    ap.add_argument("--latency-only", action="store_true",
                    help="--best: only batch-1 latency (-hint latency -b 1 against run --mode latency)")
    args = ap.parse_args()
    threads = available_cpus()
    if args.best:
        best(args, threads)
        return
    print(f"threads {threads}, {args.rounds} alternating rounds of {args.duration:.0f} s each\n")
    print(f"{'precision':9} {'mode':10} {'batch':>5}  {'visionbench':>24}  {'benchmark_app':>24}  ratio")
    for precision in args.precision.split(","):
        for mode in ("throughput", "latency"):
            batch = REFERENCE_BATCH[precision] if mode == "throughput" else 1
            vb_ips, ba_ips, vb_p50, ba_p50 = [], [], [], []
            for i in range(args.rounds):
                # Alternate which tool goes first, so drifting load favours neither.
                for tool in (("vb", "ba") if i % 2 == 0 else ("ba", "vb")):
                    if tool == "vb":
                        r = visionbench_run(
                            "--engine", "openvino", "--precision", precision, "--mode", mode,
                            "--batch-size", str(batch), "--threads", str(threads),
                            "--duration", str(args.duration), "--repeats", "1",
                        )
                        m = r["measurements"][0]
                        vb_ips.append(m["throughput_ips"])
                        vb_p50.append(m["latency"]["p50_ms"])
                        # The very file visionbench ran: the built model or its cached INT8 IR.
                        model = Path(m["engine_details"]["int8_model"] or r["model"]["path"])
                    else:
                        fps, p50 = benchmark_app(model_file(precision), batch, threads,
                                                 "bf16" if precision == "bf16" else "f32",
                                                 args.duration)
                        ba_ips.append(fps)
                        ba_p50.append(p50)
            assert model == model_file(precision)
            ratio = median(vb_ips) / median(ba_ips)
            print(f"{precision:9} {mode:10} {batch:>5}  {spread(vb_ips):>18} img/s  "
                  f"{spread(ba_ips):>18} img/s  {ratio:.3f}")
            print(f"{'':9} {'':10} {'':>5}  p50 {median(vb_p50):>14.2f} ms  "
                  f"p50 {median(ba_p50):>14.2f} ms  {median(ba_p50) / median(vb_p50):.3f}")


if __name__ == "__main__":
    main()
