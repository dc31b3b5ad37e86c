"""Do ONNX Runtime and PyTorch gain from running whole batches concurrently, as OpenVINO's
streams do? One session on all threads, called synchronously (the reference method), against one
session per core (1 thread each) called at once from as many Python threads (both engines release
the GIL while they compute), alternating rounds in one process; prints images/s and the ratio.

    python benchmarks/concurrent_sessions.py [--duration 15] [--rounds 3] [--engine onnxruntime,torch]
"""

from __future__ import annotations

import argparse
import threading
import time

from visionbench.data.calibration import synthetic_calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import SessionSpec, get_engine
from visionbench.models import resolve
from visionbench.settings import CALIBRATION_SAMPLES, REFERENCE_BATCH
from visionbench.sysinfo import available_cpus

from _common import median, spread


def images_per_second(sessions: list, fed: list, batch: int, seconds: float) -> float:
    """Each session called back to back from its own thread for ``seconds``: images/s in all."""
    done = [0] * len(sessions)
    start = time.perf_counter()

    def loop(i: int) -> None:
        k = 0
        while time.perf_counter() - start < seconds:
            sessions[i].run(fed[k % len(fed)])
            k += 1
        done[i] = k

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", default="onnxruntime,torch")
    ap.add_argument("--precision", default="fp32,int8")
    args = ap.parse_args()
    cores = available_cpus()
    model = resolve()
    cal = synthetic_calibration(model, CALIBRATION_SAMPLES)
    print(f"{cores} cores; {args.rounds} alternating rounds of {args.duration:.0f} s\n")
    for name in args.engine.split(","):
        engine = get_engine(name)
        for precision in args.precision.split(","):
            batch = REFERENCE_BATCH[precision]
            one = [engine.prepare(SessionSpec(model, precision, cores, cal, batch))]
            per_core = [engine.prepare(SessionSpec(model, precision, 1, cal, batch)) for _ in range(cores)]
            fed = [one[0].feed(x) for x in input_pool(model, batch, seed=batch)]
            for s in (*one, *per_core):  # warm every session up
                s.run(fed[0])
                s.run(fed[0])
            if name == "torch":  # intra-op threads are the process's: set per arm
                import torch
            single, multi = [], []
            for i in range(args.rounds):
                for arm in (("one", "multi") if i % 2 == 0 else ("multi", "one")):
                    if name == "torch":
                        torch.set_num_threads(cores if arm == "one" else 1)
                    if arm == "one":
                        single.append(images_per_second(one, fed, batch, args.duration))
                    else:
                        multi.append(images_per_second(per_core, fed, batch, args.duration))
            ratios = [m / s for m, s in zip(multi, single, strict=True)]
            print(f"{name} {precision} batch {batch}: one session x {cores} threads "
                  f"{spread(single)} img/s; {cores} sessions x 1 thread {spread(multi)} img/s; "
                  f"ratio {median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]", flush=True)
            for s in (*one, *per_core):
                s.close()


if __name__ == "__main__":
    main()
