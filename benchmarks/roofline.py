"""Each precision's ResNet-50 throughput as a share of this machine's matrix-multiply peak for
that precision, both measured here: peaks with one large MatMul compiled by OpenVINO's CPU plugin
(oneDNN; FP32, BF16 where native, INT8 by NNCF), ResNet-50 by ``visionbench run``.

    python benchmarks/roofline.py [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from visionbench.config import REFERENCE_BATCH
from visionbench.sysinfo import available_cpus, cpu_features

from _common import visionbench_run

M, K, N = 1024, 2048, 2048


def matmul_model():
    import openvino as ov
    from openvino import opset13 as ops

    a = ops.parameter([M, K], np.float32, name="a")
    b = ops.constant(np.random.default_rng(0).standard_normal((K, N)).astype(np.float32))
    return ov.Model([ops.matmul(a, b, False, False)], [a], "matmul")


def peak(precision: str, threads: int, seconds: float = 3.0) -> float:
    """Best GFLOP/s (GOP/s for INT8) of an [M,K]x[K,N] MatMul at ``precision``."""
    import openvino as ov

    model = matmul_model()
    x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
    if precision == "int8":
        import nncf

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = nncf.quantize(model, nncf.Dataset([x, x * 0.5]), subset_size=2)
    hint = "bf16" if precision == "bf16" else "f32"
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
    })
    req = compiled.create_infer_request()
    for _ in range(3):
        req.infer({0: x})
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        req.infer({0: x})
        best = min(best, time.perf_counter() - t)
    return 2 * M * K * N / best / 1e9


def numpy_fp32_peak(seconds: float = 3.0) -> float:
    a = np.random.default_rng(0).standard_normal((M, K), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((K, N), dtype=np.float32)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * M * K * N / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    threads = available_cpus()
    precisions = ["fp32", "bf16", "int8"] if cpu_features().bf16 else ["fp32", "int8"]
    print(f"threads {threads}; MatMul [{M}x{K}]x[{K}x{N}]; numpy (OpenBLAS) fp32 peak "
          f"{numpy_fp32_peak():.0f} GFLOP/s\n")
    print(f"{'precision':9} {'peak G(FL)OP/s':>14} {'ResNet-50 img/s':>16} {'GFLOP/s':>8} {'share':>6}")
    for p in precisions:
        pk = peak(p, threads)
        r = visionbench_run("--engine", "openvino", "--precision", p, "--mode", "throughput",
                            "--duration", str(args.duration), "--repeats", "1")
        m = r["measurements"][0]
        gflop = r["model"]["gflop_per_image"] * m["throughput_ips"]
        print(f"{p:9} {pk:>14.0f} {m['throughput_ips']:>16.1f} {gflop:>8.0f} {gflop / pk:>6.0%}"
              f"   (batch {REFERENCE_BATCH[p]}, ran {m['executed_precision']})")


if __name__ == "__main__":
    main()
