"""How OpenVINO's asynchronous completions reach the harness: a Python callback set on each infer
request (what visionbench did until 2026-12-03) against a Python thread per request waiting on it
with the GIL released (what it does now: a callback's last copy, freed on a stream thread, took the
GIL while the main thread, freeing the compiled model, joined that thread: a hang). One compiled
model with OpenVINO's THROUGHPUT hint and its optimal requests in flight, both paths on it,
alternating rounds in one process; ratios are per round, waiter / callback, median [min-max].

    python benchmarks/openvino_completions.py [--precision int8] [--batch 1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from visionbench.data.calibration import synthetic_calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import SessionSpec, get_engine
from visionbench.engines.base import Execution
from visionbench.engines.openvino import OpenVINOSession
from visionbench.harness.timing import TimingPlan, measure_async
from visionbench.models import resolve
from visionbench.sysinfo import available_cpus, system_info

from _common import median, spread


def compiled_model(model, precision: str, batch: int, threads: int):
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    path = model.path
    if precision == "int8":  # the cached NNCF model visionbench runs
        s = get_engine("openvino").prepare(SessionSpec(model, "int8", threads,
                                                       synthetic_calibration(model, 32), 1))
        path = s.execution.details["int8_model"]
        s.close()
    core = ov.Core()
    m = core.read_model(str(path))
    m.reshape({model.input_name: list(model.input_shape(batch))})
    return core.compile_model(m, "CPU", {
        hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
        props.inference_num_threads: threads,
        hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
    })


def callback_start(compiled, requests: int):
    """The former path: OpenVINO calls a Python function (taking the GIL) on each completion."""
    reqs = [compiled.create_infer_request() for _ in range(requests)]
    done = [None] * requests

    def finished(slot: int) -> None:
        done[slot]()

    for slot, r in enumerate(reqs):
        r.set_callback(finished, slot)

    def start(slot, batch, call) -> None:
        done[slot] = call
        reqs[slot].start_async({0: batch}, share_inputs=True)

    return start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    import openvino.properties as props

    model, threads = resolve(a.model), available_cpus()
    compiled = compiled_model(model, a.precision, a.batch, threads)
    requests = int(compiled.get_property(props.optimal_number_of_infer_requests))
    paths = {
        "callback": callback_start(compiled, requests),
        "waiter": OpenVINOSession(compiled, model.output_name, Execution("f32"), requests).start,
    }
    inputs = list(input_pool(model, a.batch, seed=a.batch))
    plan = TimingPlan(a.batch, warmup=2 * requests, repeats=1, duration=a.duration)
    ips: dict[str, list[float]] = {k: [] for k in paths}
    p50: dict[str, list[float]] = {k: [] for k in paths}
    cpu = system_info()
    print(f"{cpu.cpu_model} (family/model/stepping {cpu.cpu_family_model_stepping}): {a.model} "
          f"{a.precision} batch {a.batch}, THROUGHPUT hint, {requests} requests in flight, {threads} threads")
    for r in range(a.rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            t = measure_async(paths[name], requests, inputs, plan)
            w = t.windows[0]
            ips[name].append(w.throughput)
            p50[name].append(float(np.median(w.latencies_ns)) / 1e6)
            print(f"round {r + 1} {name:8s} {w.throughput:8.2f} img/s  p50 {p50[name][-1]:.2f} ms")
    for name in paths:
        print(f"{name:8s} {spread(ips[name])} img/s, "
              f"p50 {median(p50[name]):.2f} ms")
    ratios = [w / c for w, c in zip(ips["waiter"], ips["callback"], strict=True)]
    lat = [w / c for w, c in zip(p50["waiter"], p50["callback"], strict=True)]
    print(f"waiter / callback throughput: {median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
          f"; p50 latency: {median(lat):.3f} [{min(lat):.3f}-{max(lat):.3f}]")
    # The callback path's requests are never freed: freeing them is the hang described above.
    os._exit(0)


if __name__ == "__main__":
    main()
