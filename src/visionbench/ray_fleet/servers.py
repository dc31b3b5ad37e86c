"""``visionbench serve --address``: one model server on every chosen node of a Ray cluster, to be
loaded from the head (``visionbench loadtest`` with every node's URL).

Each node runs ``visionbench serve`` itself, as a child of a Ray actor pinned there that holds
the node's CPUs (nothing else of Ray's is scheduled beside the server): the server binds the
node's own address, takes the node's CPUs as its engine threads unless told otherwise, and
writes its ready file on the node; the actor hands its facts back. The driver announces every
server's URLs at once, then watches them: a server that stops (its process killed, its node
gone) is named on stderr and the others go on serving; Ctrl-C or SIGTERM stops them all."""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from visionbench.errors import VisionbenchError
from visionbench.ray_fleet.cluster import (
    cause,
    check_versions,
    cluster_nodes,
    connect,
    node_names,
    pinned,
    select_nodes,
)
from visionbench.reporter import Reporter

#: serve's options a node's server takes, as its command line names them.
SERVE_FLAGS = {"engines": "--engine", "precisions": "--precision", "batch_size": "--batch-size",
               "weights": "--weights", "calibration_samples": "--calibration-samples",
               "threads": "--threads", "http_port": "--http-port", "grpc_port": "--grpc-port"}
#: Seconds a node's server may take to prepare its model and listen (INT8 calibration included).
START_TIMEOUT = 900.0
#: How often the driver asks whether every server is still up.
WATCH_SECONDS = 1.0
#: Seconds a server has to stop on SIGTERM before it is killed.
STOP_SECONDS = 15.0


def _die_with_parent() -> None:
    """In the child: SIGTERM when the actor's process dies (killed with its node, or by Ray),
    so that no server outlives the actor that placed it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@ray.remote(max_restarts=0, max_concurrency=4)
class NodeServer:
    """On a node: ``visionbench serve`` as a child process."""

    def __init__(self, argv: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="visionbench-serve-"))
        self.err = (self.dir / "stderr.txt").open("w+")
        self.ready = self.dir / "ready.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "visionbench", "serve", *argv, "--ready-file", str(self.ready)],
            stdout=subprocess.DEVNULL, stderr=self.err, preexec_fn=_die_with_parent)

    def _said(self) -> str:
        self.err.flush()
        lines = (self.dir / "stderr.txt").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def start(self, timeout: float) -> dict[str, Any]:
        """The server's facts once it listens; raises with its own error line if it exits."""
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise VisionbenchError(f"exit {self.proc.returncode}: {self._said()}")
            if time.monotonic() > deadline:
                raise VisionbenchError(f"not listening after {timeout:g} s")
            time.sleep(0.2)
        return {**json.loads(self.ready.read_text()), "pid": self.proc.pid}

    def poll(self) -> str | None:
        """None while the server runs, else how it ended."""
        if self.proc.poll() is None:
            return None
        return f"exit {self.proc.returncode}: {self._said()}"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self._said()


def node_argv(model: str, host: str, cpus: float, options: dict[str, Any]) -> list[str]:
    """The command line of a node's server: ``options`` as serve's flags, on ``host``, with the
    node's CPUs as threads unless ``threads`` is given."""
    unknown = sorted(set(options) - set(SERVE_FLAGS))
    if unknown:
        raise VisionbenchError(f"serve on a cluster takes {', '.join(sorted(SERVE_FLAGS))}; not "
                               f"{', '.join(unknown)}")
    given = {"threads": max(int(cpus), 1), **options}
    argv = [model, "--host", host]
    for key, value in given.items():
        if key == "weights":
            value = Path(value).absolute()  # the same path on every node
        for v in value if isinstance(value, list | tuple) else [value]:
            argv += [SERVE_FLAGS[key], str(v)]
    return argv


def serve_on(address: str, selectors: list[str] | None, model: str, options: dict[str, Any],
             announce: Callable[[dict[str, Any]], None], warn: Callable[[str], None],
             reporter: Reporter, ready_file: Callable[[dict[str, Any]], None] | None = None
             ) -> str:
    """Serve ``model`` on the chosen nodes until SIGINT or SIGTERM (or until every server has
    stopped: an error); ``announce`` gets every server's facts once all listen. Returns the
    name of the signal that stopped them."""
    connect(address, None)
    servers: list[tuple[str, Any]] = []
    stopped_by: list[str] = []
    previous = {sig: signal.signal(sig, lambda s, f: stopped_by.append(signal.Signals(s).name))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        nodes = select_nodes(cluster_nodes(), selectors, reporter)
        names = node_names(nodes)
        engines = list(options.get("engines") or [])
        check_versions(nodes, names, engines, timeout=120)
        for node, name in zip(nodes, names, strict=True):
            argv = node_argv(model, node.address, node.cpus, options)
            actor = NodeServer.options(scheduling_strategy=pinned(node),
                                       num_cpus=node.cpus).remote(argv)
            servers.append((name, actor))
        starting = {actor.start.remote(START_TIMEOUT): i for i, (_, actor) in enumerate(servers)}
        said: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + START_TIMEOUT + 60
        while starting and not stopped_by:  # Ctrl-C is heard while the models are prepared
            done, _ = ray.wait(list(starting), timeout=WATCH_SECONDS)
            for ref in done:
                i = starting.pop(ref)
                node = nodes[i]
                try:
                    said[i] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise VisionbenchError(f"the server on node {names[i]} ({node.address}) did "
                                           f"not start: {cause(e)}") from None
            if time.monotonic() > deadline:
                raise VisionbenchError(f"the server on node {names[next(iter(starting.values()))]}"
                                       f" did not listen within {START_TIMEOUT:g} s")
        if stopped_by:
            return stopped_by[0]
        facts = [{"node": names[i], "node_id": nodes[i].node_id,
                  "node_address": nodes[i].address, **said[i]} for i in range(len(nodes))]
        first = facts[0]
        announced = {"servers": facts, "http": [f["http"] for f in facts],
                     "grpc": [f["grpc"] for f in facts],
                     **{k: first[k] for k in ("model", "noop_model", "jpeg_model") if k in first}}
        if ready_file is not None:
            ready_file(announced)
        announce(announced)
        up = dict(servers)
        while up and not stopped_by:
            time.sleep(WATCH_SECONDS)
            for name, actor in list(up.items()):
                try:
                    ended = ray.get(actor.poll.remote(), timeout=30)
                except ray.exceptions.GetTimeoutError:
                    continue  # a busy node: asked again
                except ray.exceptions.RayError as e:
                    ended = cause(e)
                if ended is not None:
                    del up[name]
                    warn(f"the server on node {name} stopped ({ended}); "
                         + (f"{len(up)} still serving" if up else "none left"))
        if not stopped_by:
            raise VisionbenchError("every node's server stopped")
        return stopped_by[0]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopping = [actor.stop.remote() for _, actor in servers]  # all at once
        if stopping:
            ray.wait(stopping, num_returns=len(stopping), timeout=STOP_SECONDS + 10)
        for _, actor in servers:  # a server whose node is gone went with it
            ray.kill(actor)
        ray.shutdown()
