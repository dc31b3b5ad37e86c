"""Served inference: serve (a model behind KServe's model server) and loadtest (a sweep against
any KServe v2 server), registered on the group by ``cli.main``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from visionbench import api
from visionbench.cli import tables
from visionbench.cli.options import int_list, node_list
from visionbench.cli.running import console, report_run
from visionbench.engines import PRECISIONS, all_engines
from visionbench.settings import DEFAULT_ENGINE


@click.command()
@click.argument("model", default="resnet50")
@click.option("--engine", "engines", type=click.Choice(sorted(all_engines())),
              default=DEFAULT_ENGINE, show_default=True, help="The engine that runs the model.")
@click.option("--precision", "precisions", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True, help="The precision it runs at (refused where this CPU or the "
              "engine cannot run it natively).")
@click.option("--batch-size", type=int, help="Images per request the model takes [default: 1].")
@click.option("--weights", type=click.Path(path_type=Path), help="The model's weights, as run "
              "takes them.")
@click.option("--calibration-samples", type=int, help="INT8: calibration images [default: "
              "the study's].")
@click.option("--threads", type=int, help="Threads the engine uses [default: all CPUs].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (another host than loopback must be named).")
@click.option("--http-port", type=int, default=0, show_default=True,
              help="HTTP port (0: a free one, reported).")
@click.option("--grpc-port", type=int, default=0, show_default=True,
              help="gRPC port (0: a free one, reported).")
@click.option("--ready-file", type=click.Path(path_type=Path),
              help="Written (URLs, ports, configuration as JSON) once the server listens.")
@click.option("--address", help="A Ray cluster (auto, HOST:PORT of its head, or "
              "ray://HOST:10001): a server on each of its nodes, on the node's own address, "
              "loaded from here with loadtest and every node's URL.")
@click.option("--nodes", help="--address: comma list of nodes to serve on (as fleet takes "
              "them) [default: every alive node with CPUs].")
def serve(model: str, nodes: str | None, **kw: Any) -> None:
    """Serve MODEL over KServe v2 (HTTP with binary tensors, and gRPC) until Ctrl-C or SIGTERM;
    prints its URLs and configuration as one JSON line once it listens. A no-op model of the same
    input and output is served beside it as "noop" (the load generator's ceiling)."""
    given = {k: v for k, v in kw.items() if v is not None}

    def announce(facts: dict[str, Any]) -> None:
        print(json.dumps(facts), flush=True)

    def warn(line: str) -> None:
        print(f"visionbench serve: {line}", file=sys.stderr, flush=True)

    if nodes is not None:
        given["nodes"] = node_list(nodes)
    stopped = api.serve(model, announce=announce, warn=warn, **given)
    print(f"visionbench serve: stopped by {stopped}", file=sys.stderr)


@click.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option("--model", required=True, help="The served model's name.")
@click.option("--concurrency", callback=int_list, default="1,2,4,8", show_default=True,
              help="Comma list: simulated users, one connection each, sending back to back.")
@click.option("--duration", type=float, default=5.0, show_default=True,
              help="Seconds timed per point, after the warm-up.")
@click.option("--warmup", type=float, default=1.0, show_default=True,
              help="Seconds sent and not timed before each point.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds a request may take before it counts as a timeout.")
@click.option("--input-shape", callback=int_list, help="Comma list: the input's shape, where "
              "the server's metadata gives a variable one.")
@click.option("--ceiling", metavar="MODEL", help="Sweep the server's no-op MODEL first (serve's "
              "is noop): the generator's ceiling; a point above half of it is flagged.")
@click.option("--rate", "rates", callback=lambda ctx, param, v: _floats(v, "--rate"),
              help="Comma list of queries/s: instead of the sweep, LoadGen's Server scenario (Poisson "
              "arrivals) at each, for at least --duration seconds: LoadGen's VALID or the rules "
              "broken.")
@click.option("--connections", type=int, default=32, show_default=True,
              help="--rate: the connections requests are sent on (a request waits for a free one).")
@click.option("--target-latency-ms", type=float, help="--rate: the latency bound at p99 "
              "[default: MLPerf's 15 ms].")
@click.option("--min-queries", type=int, help="--rate: LoadGen's minimum query count "
              "[default: MLPerf's].")
@click.option("--jpeg", is_flag=True, help="Send JPEG files, to a model that decodes them on "
              "the server (serve's MODEL-jpeg): the service's own path, decode included.")
@click.option("--data", type=click.Path(path_type=Path), help="--jpeg: a JPEG file or a folder "
              "of them, sent in turn [default: the shipped photos].")
@click.option("--server-facts", type=click.Path(path_type=Path),
              help="The file serve wrote with --ready-file: its engine and configuration are "
              "recorded with the points.")
@click.option("--output", type=click.Path(path_type=Path),
              help="Run directory [default: results/<timestamp>-loadtest].")
@click.option("--append", is_flag=True, help="Add the points to the loadtest run in --output.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --output (kept aside until "
              "the first point is stored).")
def loadtest(urls: tuple[str, ...], **kw: Any) -> None:
    """Load the KServe v2 server at URL (http://HOST:PORT or grpc://HOST:PORT): a closed-loop
    sweep of concurrency, per point throughput, latency percentiles with 95% intervals, errors by
    kind and the generator's own CPU; the knee marked. Several URLs (a cluster's servers, from
    serve --address) are loaded together, each by its own users."""
    measured: list[Any] = []

    def shown(p: Any) -> None:
        measured.append(p)
        tables.print_load_point(console, p)

    results = api.loadtest(list(urls), on_point=shown, command=sys.argv, **kw)
    tables.print_results(console, results)
    console.print(f"results: {results.directory / 'results.json'}")
    report_run(results)
    erred = [p for p in measured if p.errors]
    if erred:  # the run went on: its figures count the requests answered, and it says so
        kinds = Counter[str]()
        for p in erred:
            kinds.update(p.errors)
        print(f"visionbench: {len(erred)} of {len(measured)} points had failed requests ("
              + ", ".join(f"{n} {k}" for k, n in kinds.most_common()) + "): their figures count "
              "the requests answered; see the errors column", file=sys.stderr)


def _floats(value: str | None, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers, comma-separated", param_hint=name) from None


COMMANDS = [serve, loadtest]
