"""visionbench's OpenVINO numbers against OpenVINO's own benchmark_app on the very same file.

Both run one synchronous request, one stream, the same threads, batch and inference precision;
rounds alternate the two tools so drifting machine load hits both alike.

    python benchmarks/vs_benchmark_app.py [--duration 10] [--rounds 3] [--precision fp32,int8]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from visionbench.config import REFERENCE_BATCH
from visionbench.sysinfo import available_cpus, cpu_features

from _common import median, spread, visionbench_run


def benchmark_app(
    model: Path, batch: int, threads: int, precision: str, duration: float
) -> tuple[float, float]:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    cmd = [
        exe, "-m", str(model), "-d", "CPU", "-api", "sync", "-nireq", "1", "-nstreams", "1",
        "-nthreads", str(threads), "-hint", "none", "-shape", f"[{batch},3,224,224]",
        "-t", str(round(duration)), "-infer_precision", precision,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    fps = float(re.search(r"Throughput:\s+([\d.]+)\s+FPS", out).group(1))
    p50 = float(re.search(r"Median:\s+([\d.]+)\s+ms", out).group(1))
    return fps, p50


def model_file(precision: str) -> Path:
    """The file visionbench runs for ``precision``: the built model, or its cached NNCF IR."""
    from visionbench.config import CALIBRATION_SAMPLES
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines.openvino import _quantize
    from visionbench.models import resolve

    spec = resolve()
    if precision != "int8":
        return spec.path
    return _quantize(spec, synthetic_calibration(spec, CALIBRATION_SAMPLES))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="fp32,bf16,int8" if cpu_features().bf16 else "fp32,int8")
    args = ap.parse_args()
    threads = available_cpus()
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
