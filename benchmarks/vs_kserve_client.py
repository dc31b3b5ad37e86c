"""visionbench's load generator against a second real client library, on the same server at the
same concurrency (Triton's perf_analyzer, the issue's first choice, needs glibc 2.38 and does not
run here: docs/serving.md). The second client is KServe's own (InferenceGRPCClient), driven as a
closed loop of N users, each sending its next request when its last is answered: in a process of
its own (KServe's and Triton's protobuf modules clash in one). The server is pinned to core 0,
each client in turn to core 1, alternating round by round; prints per round each client's
images/s and CPU (cores), and the ratio visionbench / KServe's client, median [min-max].

    python benchmarks/vs_kserve_client.py [--rounds 5] [--model resnet50] [--precision int8]
        [--concurrency 2] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import CLIENT_CORE, SERVER_CORE, pinned, served, spread


async def _kserve_loop(url: str, model: str, tensor: dict, users: int, warmup: float,
                       duration: float) -> dict:
    """KServe's gRPC client, ``users`` closed-loop users sending ``tensor`` (name, shape):
    images/s over ``duration`` seconds after ``warmup``, and this process's CPU over the window in
    cores."""
    import numpy as np
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(url.removeprefix("grpc://"), timeout=60, retries=0)
    shape = list(tensor["shape"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    inp = InferInput(tensor["name"], shape, "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    request = InferRequest(model_name=model, infer_inputs=[inp])
    done = 0

    async def user(until: float, count: bool) -> None:
        nonlocal done
        while time.perf_counter() < until:
            await client.infer(request)
            if count and time.perf_counter() <= until:
                done += 1

    await asyncio.gather(*(user(time.perf_counter() + warmup, False) for _ in range(users)))
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(user(t0 + duration, True) for _ in range(users)))
    cpu = time.process_time() - cpu0
    await client.close()
    return {"ips": done * shape[0] / duration, "cpu": cpu / duration}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--kserve-client", help=argparse.SUPPRESS)  # this script, as the 2nd client
    ap.add_argument("--tensor", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.kserve_client:
        print(json.dumps(asyncio.run(_kserve_loop(a.kserve_client, a.model, json.loads(a.tensor),
                                                  a.concurrency, 1.0, a.duration))))
        return
    tmp = Path(tempfile.mkdtemp(prefix="vs-kserve-client-"))
    with served(a.model, "--precision", a.precision, "--threads", "1") as urls:
        url = urls["grpc"]
        with urllib.request.urlopen(f"{urls['http']}/v2/models/{a.model}") as r:
            tensor = json.loads(r.read())["inputs"][0]  # read by neither client's library
        ours, theirs = [], []
        for r in range(a.rounds):
            for who in (("ours", "kserve") if r % 2 == 0 else ("kserve", "ours")):
                if who == "ours":
                    out = tmp / f"load-{r}"
                    subprocess.run(pinned(CLIENT_CORE, "loadtest", url, "--model", a.model,
                                          "--concurrency", str(a.concurrency), "--duration",
                                          str(a.duration), "--warmup", "1", "--output",
                                          str(out)),
                                   check=True, capture_output=True)
                    (p,) = json.loads((out / "results.json").read_text())["loadtest"]
                    ours.append({"ips": p["throughput_ips"], "cpu": p["client_cpu_cores"]})
                else:
                    proc = subprocess.run(
                        ["taskset", "-c", CLIENT_CORE, sys.executable, __file__, "--model",
                         a.model, "--concurrency", str(a.concurrency), "--duration",
                         str(a.duration), "--kserve-client", url, "--tensor", json.dumps(tensor)],
                        check=True, capture_output=True, text=True)
                    theirs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {who}: {(ours if who == 'ours' else theirs)[-1]}", flush=True)
        ratios = [o["ips"] / t["ips"] for o, t in zip(ours, theirs, strict=True)]
        print(f"\n{a.model} {a.precision} over gRPC, {a.concurrency} users, server on core "
              f"{SERVER_CORE}, each client on core {CLIENT_CORE}, {a.rounds} alternating rounds:")
        print(f"  visionbench loadtest (tritonclient): {spread([o['ips'] for o in ours])} img/s, "
              f"CPU {spread([o['cpu'] for o in ours])} cores")
        print(f"  KServe's InferenceGRPCClient:        {spread([t['ips'] for t in theirs])} img/s, "
              f"CPU {spread([t['cpu'] for t in theirs])} cores")
        print(f"  ratio visionbench / KServe's client: {spread(ratios)}")


if __name__ == "__main__":
    main()
