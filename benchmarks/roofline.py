"""Each precision's ResNet-50 throughput as a share of this machine's matrix-multiply peak for
that precision, both measured here. The peak is the best of one large GEMM compiled by OpenVINO's
CPU plugin (oneDNN; FP32, BF16 where native, INT8 by NNCF) in two forms: a MatMul, and the same
GEMM as a 1x1 convolution (a ResNet bottleneck's own kernel; on some CPUs, e.g. AVX2 without
VNNI, the plugin's int8 convolution is far faster than its int8 MatMul). ResNet-50 by
``visionbench run``.

    python benchmarks/roofline.py [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from visionbench.settings import REFERENCE_BATCH
from visionbench.sysinfo import available_cpus, cpu_features

from _common import visionbench_run

M, K, N = 1024, 2048, 2048


SIDE = 32  # the 1x1 convolution's spatial size: SIDE * SIDE == M output positions


def gemm_model(form: str):
    """[M,K]x[K,N] as a MatMul, or as a 1x1 convolution over a SIDE x SIDE map of K channels."""
    import openvino as ov
    from openvino import opset13 as ops

    w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    if form == "matmul":
        a = ops.parameter([M, K], np.float32, name="a")
        return ov.Model([ops.matmul(a, ops.constant(w), False, False)], [a], "matmul")
    a = ops.parameter([1, K, SIDE, SIDE], np.float32, name="a")
    kernel = ops.constant(np.ascontiguousarray(w.T.reshape(N, K, 1, 1)))
    return ov.Model([ops.convolution(a, kernel, [1, 1], [0, 0], [0, 0], [1, 1])], [a], "conv1x1")


def peak(precision: str, form: str, threads: int, seconds: float = 3.0) -> tuple[float, str]:
    """Best GFLOP/s (GOP/s for INT8) of an [M,K]x[K,N] MatMul at ``precision``, and the
    precision the plugin ran it at."""
    import openvino as ov

    model = gemm_model(form)
    shape = (M, K) if form == "matmul" else (1, K, SIDE, SIDE)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    if precision == "int8":
        # Non-negative activations, as after ResNet's ReLUs: NNCF then picks u8 x s8, the fast
        # integer path (signed x signed has no direct instruction without VNNI).
        x = np.abs(x)
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
    ran = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul", "Convolution")
    }
    return 2 * M * K * N / best / 1e9, ",".join(sorted(ran))


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
    print(f"threads {threads}; GEMM [{M}x{K}]x[{K}x{N}] in G(FL)OP/s; numpy (OpenBLAS) fp32 "
          f"{numpy_fp32_peak():.0f} GFLOP/s\n")
    print(f"{'precision':9} {'MatMul':>7} {'1x1 conv':>8} {'ResNet-50 img/s':>16} {'GFLOP/s':>8} "
          f"{'share of best':>13}")
    for p in precisions:
        mm, ran_mm = peak(p, "matmul", threads)
        cv, ran_cv = peak(p, "conv", threads)
        pk = max(mm, cv)
        r = visionbench_run("--engine", "openvino", "--precision", p, "--mode", "throughput",
                            "--duration", str(args.duration), "--repeats", "1")
        m = r["measurements"][0]
        gflop = r["model"]["gflop_per_image"] * m["throughput_ips"]
        print(f"{p:9} {mm:>7.0f} {cv:>8.0f} {m['throughput_ips']:>16.1f} {gflop:>8.0f} {gflop / pk:>13.0%}"
              f"   (GEMMs ran {ran_mm}/{ran_cv}; ResNet-50 batch {REFERENCE_BATCH[p]}, "
              f"ran {m['executed_precision']})")


if __name__ == "__main__":
    main()
