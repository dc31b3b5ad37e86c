"""Harness overhead: visionbench's timing harness against a bare loop calling the engine's own
API, alternating rounds in one process, same model, batch, threads and duration. (The bare
PyTorch loop feeds tensors converted to channels_last before the loop; visionbench converts each
numpy batch inside the timed call, so that copy counts against it. The bare TensorFlow loop calls
the Keras model in a tf.function, as users write it; visionbench runs the frozen graph.)

    python benchmarks/harness_overhead.py [--duration 8] [--rounds 3] [--model resnet50]
"""

from __future__ import annotations

import argparse
import time

from visionbench.data.calibration import synthetic_calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import SessionSpec, get_engine
from visionbench.harness.timing import TimingPlan, measure
from visionbench.models import resolve
from visionbench.sysinfo import available_cpus

from _common import median, spread


def bare_openvino(model, batch: int, threads: int):
    import openvino as ov

    core = ov.Core()
    m = core.read_model(str(model.path))
    m.reshape({model.input_name: list(model.input_shape(batch))})
    compiled = core.compile_model(m, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    })
    req = compiled.create_infer_request()
    return lambda x: req.infer({0: x}, share_inputs=True)


def bare_onnxruntime(model, batch: int, threads: int):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(model.path), o, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {model.input_name: x})


def bare_torch(model, batch: int, threads: int, compiled: bool):
    """A plain PyTorch loop: the module in channels_last, tensors made before the loop."""
    import numpy as np
    import torch

    from visionbench.models import onnx_weights
    from visionbench.models.resnet50 import config_from_weights
    from visionbench.models.torch_resnet import module_from_arrays

    torch.set_num_threads(threads)
    arrays = onnx_weights(model)
    module, _ = module_from_arrays(config_from_weights(arrays, model.height), arrays)
    module = module.to(memory_format=torch.channels_last)
    if compiled:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        module = torch.compile(module)
    cache: dict[int, torch.Tensor] = {}

    def call(x: np.ndarray) -> torch.Tensor:
        t = cache.get(id(x))
        if t is None:
            t = cache[id(x)] = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return module(t)

    return call


def bare_tensorflow(model, batch: int, threads: int):
    """What a TensorFlow user writes: the Keras model in a tf.function, NHWC tensors made before
    the loop. (visionbench runs the frozen graph instead, as the reference scripts do.)"""
    import numpy as np

    from visionbench.models import onnx_weights
    from visionbench.models.keras_resnet import make_keras
    from visionbench.models.resnet50 import config_from_weights
    from visionbench.models.tensorflow_files import import_tensorflow, set_threads

    tf = import_tensorflow()
    set_threads(tf, threads)
    arrays = onnx_weights(model)
    keras_model = make_keras(arrays, config_from_weights(arrays, model.height))
    fn = tf.function(lambda x: keras_model(x, training=False))
    cache: dict[int, object] = {}

    def call(x: np.ndarray):
        t = cache.get(id(x))
        if t is None:
            t = cache[id(x)] = tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        return fn(t).numpy()

    return call


BARE = {
    "openvino": bare_openvino,
    "onnxruntime": bare_onnxruntime,
    "torch": lambda m, b, t: bare_torch(m, b, t, compiled=True),
    "torch-eager": lambda m, b, t: bare_torch(m, b, t, compiled=False),
    "tensorflow": bare_tensorflow,
}


def bare_loop(call, inputs, duration: float, batch: int) -> float:
    for x in inputs[:2]:
        call(x)
    n, start = 0, time.perf_counter()
    while True:
        call(inputs[n % len(inputs)])
        n += 1
        if time.perf_counter() - start >= duration:
            return n * batch / (time.perf_counter() - start)


def per_call_cost_us(n: int = 200_000) -> tuple[float, float]:
    """Microseconds per call of the harness and of a bare loop around a function doing nothing:
    the harness's own cost, free of any engine's noise."""

    def noop(_):
        return None

    inputs = [0, 1]
    plan = TimingPlan(batch_size=1, warmup=0, repeats=1, iterations=n)
    t = time.perf_counter()
    measure(noop, inputs, plan)
    ours = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for i in range(n):
        noop(inputs[i % 2])
    return ours, (time.perf_counter() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--engines", default="openvino,onnxruntime,torch,torch-eager,tensorflow")
    ap.add_argument("--batches", default="1,16")
    args = ap.parse_args()
    threads = available_cpus()
    model = resolve(args.model)
    fastest_call_us = float("inf")
    print(f"{args.model}, fp32, threads {threads}, {args.rounds} alternating rounds of "
          f"{args.duration:.0f} s\n")
    print(f"{'engine':12} {'batch':>5}  {'visionbench img/s':>26}  {'bare loop img/s':>26}  ratio")
    for name in args.engines.split(","):
        engine = get_engine(name)
        for batch in (int(b) for b in args.batches.split(",")):
            session = engine.prepare(SessionSpec(model, "fp32", threads, synthetic_calibration(model,
                                                 1), batch))
            bare = BARE[name](model, batch, threads)
            inputs = input_pool(model, batch, seed=1)
            plan = TimingPlan(batch_size=batch, warmup=2, repeats=1, duration=args.duration)
            ours, theirs = [], []
            fed = [session.feed(x) for x in inputs]
            for _ in range(args.rounds):
                ours.append(measure(session.run, fed, plan).windows[0].throughput)
                theirs.append(bare_loop(bare, inputs, args.duration, batch))
            print(f"{name:12} {batch:>5}  {spread(ours):>26}  {spread(theirs):>26}  "
                  f"{median(ours) / median(theirs):.3f}")
            if batch == 1:
                fastest_call_us = min(fastest_call_us, 1e6 / max(max(ours), max(theirs)))
    ours_us, bare_us = per_call_cost_us()
    extra = ours_us - bare_us
    print(f"\nper call around a no-op: harness {ours_us:.2f} us, bare loop {bare_us:.2f} us; "
          f"the harness adds {extra:.2f} us = {extra / fastest_call_us:.4%} of the fastest "
          f"batch-1 inference above ({fastest_call_us:.0f} us)")


if __name__ == "__main__":
    main()
