"""What serving costs: the same model, engine, precision and batch measured in-process and served
(visionbench serve, KServe's Python model server) in alternating rounds, the server and the load
generator pinned to separate cores and the in-process run on the server's core (2 cores here: one
each). In-process, on core 0 with one thread: batch-1 latency (one synchronous request) and
batch-1 throughput under the engine's own throughput configuration, as the server runs it.
Served, per protocol: a closed-loop sweep from core 1 (the no-op model first: the generator's
ceiling), the knee, and the server's own times (Triton's statistics extension). Prints per
precision and protocol the served/in-process ratios at concurrency 1 and at the knee, median
[min-max] over the rounds, and where the served time goes: the engine's call, the wait for an
engine request, and the rest (the HTTP or gRPC stack, (de)serialisation, loopback). With
``--jpeg``, also the service's own path over gRPC: the shipped photos sent as JPEG files to serve's
MODEL-jpeg, decoded and preprocessed on the server's core, against the tensor request.

    python benchmarks/serving_overhead.py [--rounds 3] [--precisions fp32,int8]
        [--model resnet50] [--engine openvino] [--duration 4] [--concurrency 1,2,4] [--jpeg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from _common import CLIENT_CORE, SERVER_CORE, median, pinned, served, spread


def in_process(a: argparse.Namespace, precision: str, out: Path) -> dict[str, float]:
    """Batch-1 p50/p99 (one synchronous request) and batch-1 images/s (the engine's own
    throughput configuration), on the server's core with one thread."""
    subprocess.run(pinned(SERVER_CORE, "run", "--model", a.model, "--engine", a.engine, "--precision",
                      precision, "--mode", "throughput,latency", "--method", "engine",
                      "--batch-size", "1", "--threads", "1", "--duration", a.duration,
                      "--repeats", "3", "--output", str(out)), check=True, capture_output=True)
    r = json.loads((out / "results.json").read_text())
    by_mode = {m["mode"]: m for m in r["measurements"] if m["status"] == "ok"}
    lat = by_mode["latency"]["latency"]
    return {"p50": lat["p50_ms"], "p99": lat["p99_ms"],
            "ips": by_mode["throughput"]["throughput_ips"]}


def load(a: argparse.Namespace, url: str, facts: Path, out: Path, jpeg: bool = False) -> dict:
    what = ["--model", f"{a.model}-jpeg", "--jpeg"] if jpeg else ["--model", a.model, "--ceiling",
                                                                  "noop"]
    subprocess.run(pinned(CLIENT_CORE, "loadtest", url, *what, "--concurrency", a.concurrency,
                      "--duration", a.duration, "--warmup", "1", "--server-facts", str(facts),
                      "--output", str(out)), check=True, capture_output=True)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--duration", default="4")
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--jpeg", action="store_true")
    a = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: one for the server, one for the load generator")
    for precision in a.precisions.split(","):
        tmp = Path(tempfile.mkdtemp(prefix="serving-overhead-"))
        with served(a.model, "--engine", a.engine, "--precision", precision,
                    "--threads", "1") as urls:
            facts = Path(urls["ready_file"])
            rows: dict[str, list[dict]] = {"http": [], "grpc": []}
            jpegs: list[dict] = []
            alone: list[dict[str, float]] = []
            for r in range(a.rounds):
                # alternate: in-process first in even rounds, last in odd ones
                steps = ["in-process", "http", "grpc"] + (["grpc-jpeg"] if a.jpeg else [])
                for step in steps if r % 2 == 0 else steps[::-1]:
                    out = tmp / f"{step}-{r}"
                    if step == "in-process":
                        alone.append(in_process(a, precision, out))
                    elif step == "grpc-jpeg":
                        jpegs.append(load(a, urls["grpc"], facts, out, jpeg=True))
                    else:
                        rows[step].append(load(a, urls[step], facts, out))
            report(a, precision, urls, alone, rows)
            if jpegs:
                report_jpeg(a, urls, rows["grpc"], jpegs)


def report(a: argparse.Namespace, precision: str, urls: dict, alone: list[dict[str, float]],
           rows: dict[str, list[dict]]) -> None:
    print(f"\n{a.model} {a.engine} {precision}: server on core {SERVER_CORE} ({urls['concurrency']}"
          f", ran {urls['executed_precision']}), load generator on core {CLIENT_CORE}, "
          f"{a.rounds} rounds")
    print(f"  in-process, core {SERVER_CORE}, 1 thread: batch-1 p50 "
          f"{spread([x['p50'] for x in alone])} ms, p99 {spread([x['p99'] for x in alone])} ms; "
          f"batch-1 throughput (engine's configuration) {spread([x['ips'] for x in alone])} img/s")
    for protocol, runs in rows.items():
        one, knee, ceiling, split = [], [], [], []
        for i, run in enumerate(runs):
            points = [p for p in run["loadtest"] if p["model"] == a.model and p["status"] == "ok"]
            noop = [p for p in run["loadtest"] if p["model"] == "noop" and p["status"] == "ok"]
            c1 = min(points, key=lambda p: p["concurrency"])
            k = next(p for p in points if p["knee"])
            base = alone[i]
            one.append((c1["throughput_ips"] / (1000 / base["p50"]), c1["latency"]["p50_ms"] / base["p50"],
                        c1["latency"]["p99_ms"] / base["p99"]))
            knee.append((k["throughput_ips"] / base["ips"], k["concurrency"], k["ceiling_share"]))
            ceiling.append(max(p["throughput_ips"] for p in noop))
            ms = c1["server_ms"]
            split.append((c1["latency"]["mean_ms"], ms.get("compute_infer", 0.0),
                          ms.get("queue", 0.0), ms.get("success", 0.0)))
        print(f"  {protocol}: concurrency 1 vs in-process batch 1: throughput "
              f"{spread([x[0] for x in one])}x, p50 {spread([x[1] for x in one])}x, p99 "
              f"{spread([x[2] for x in one])}x")
        print(f"  {protocol}: knee (concurrency {sorted({x[1] for x in knee})}) vs in-process "
              f"throughput: {spread([x[0] for x in knee])}x; the knee at "
              f"{spread([x[2] or 0.0 for x in knee])} of the no-op ceiling "
              f"({spread(ceiling)} img/s)")
        mean, infer, queue, inside = (median([x[j] for x in split]) for j in range(4))
        print(f"  {protocol}: concurrency 1, mean {mean:.2f} ms as the client sees it = the "
              f"engine's call {infer:.2f} + the wait for an engine request {queue:.2f} + the rest "
              f"of predict {inside - infer - queue:.2f} + outside predict (stack, "
              f"(de)serialisation, loopback) {mean - inside:.2f}")


def report_jpeg(a: argparse.Namespace, urls: dict, tensors: list[dict], jpegs: list[dict]) -> None:
    """The JPEG request against the tensor request, both over gRPC, per round."""
    def c1(run: dict) -> dict:
        ok = [p for p in run["loadtest"] if p["status"] == "ok" and p["model"] != "noop"]
        return min(ok, key=lambda p: p["concurrency"])

    pairs = [(c1(j), c1(t)) for j, t in zip(jpegs, tensors, strict=True)]
    knees = [next(p for p in j["loadtest"] if p["knee"]) for j in jpegs]
    print(f"  grpc, JPEG files ({urls.get('decoder')}, {urls.get('decode_threads')} decode "
          f"thread(s) on core {SERVER_CORE}) against the tensor: concurrency 1 throughput "
          f"{spread([j['throughput_ips'] / t['throughput_ips'] for j, t in pairs])}x, p50 "
          f"{spread([j['latency']['p50_ms'] for j, _ in pairs])} ms against "
          f"{spread([t['latency']['p50_ms'] for _, t in pairs])}; in the server, input "
          f"(decode, preprocess) {spread([j['server_ms']['compute_input'] for j, _ in pairs])} ms "
          f"against {spread([t['server_ms']['compute_input'] for _, t in pairs])}; knee "
          f"{spread([k['throughput_ips'] for k in knees])} img/s at concurrency "
          f"{sorted({k['concurrency'] for k in knees})}")


if __name__ == "__main__":
    main()
