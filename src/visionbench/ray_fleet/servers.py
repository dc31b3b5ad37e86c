"""``visionbench serve --address``: one model server on every chosen node of a Ray cluster, to be
loaded from the head (``visionbench loadtest`` with every node's URL).

Each node runs ``visionbench serve`` itself, as a child of a Ray actor pinned there that holds
the node's CPUs (nothing else of Ray's is scheduled beside the server): the server binds the
node's own address, takes the node's CPUs as its engine threads unless told otherwise, and
writes its ready file on the node; the actor hands its facts back. The driver announces every
server's URLs at once, then watches them: a server that stops (its process killed, its node
gone) is named on stderr and the others go on serving; Ctrl-C, SIGTERM or SIGHUP stops them
all, and a server whose actor is gone stops by itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from visionbench.errors import VisionbenchError, describe
from visionbench.launch.process import PARENT_ENV
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
#: Seconds a node may take to give the server's actor its CPUs (other Ray work may hold them).
PLACE_TIMEOUT = 120.0
#: Seconds a node's server may take to prepare its model and listen (INT8 calibration included).
START_TIMEOUT = 900.0
#: How often the driver asks whether every server is still up.
WATCH_SECONDS = 1.0
#: Seconds a server has to stop on SIGTERM before it is killed.
STOP_SECONDS = 15.0


@ray.remote(max_restarts=0, max_concurrency=4)
class NodeServer:
    """On a node: ``visionbench serve`` as a child process, which stops once this actor's
    process is gone (``PARENT_ENV``)."""

    def __init__(self, argv: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="visionbench-serve-"))
        self.err = (self.dir / "stderr.txt").open("w+")
        self.ready = self.dir / "ready.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "visionbench", "serve", *argv, "--ready-file", str(self.ready)],
            stdout=subprocess.DEVNULL, stderr=self.err,
            env={**os.environ, PARENT_ENV: str(os.getpid())})

    def placed(self) -> int:
        """The server's pid: the actor holds its node's CPUs and runs."""
        return self.proc.pid

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
        said = self._said()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return said


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


def _wait(refs: dict[Any, int], stopped_by: list[str], timeout: float,
          late: Callable[[int], str], failed: Callable[[int], str]) -> dict[int, Any]:
    """Each ref's value by its index, heard while Ctrl-C is (stops early, with what came);
    raises ``late(index)`` for the first that has not answered within ``timeout``, and
    ``failed(index)`` with the cause for one that raised."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while refs and not stopped_by:
        done, _ = ray.wait(list(refs), timeout=WATCH_SECONDS)
        for ref in done:
            i = refs.pop(ref)
            try:
                got[i] = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise VisionbenchError(f"{failed(i)}: {cause(e)}") from None
        if refs and time.monotonic() > deadline:
            raise VisionbenchError(late(next(iter(refs.values()))))
    return got


def _watch(servers: dict[str, Any], stopped_by: list[str], warn: Callable[[str], None]) -> None:
    """Until a signal, or until every server has stopped: one question at a time to each
    actor, a server that stopped (or whose node or actor died) named through ``warn``."""
    asked = {actor.poll.remote(): name for name, actor in servers.items()}
    while asked and not stopped_by:
        done, _ = ray.wait(list(asked), timeout=WATCH_SECONDS)
        for ref in done:
            name = asked.pop(ref)
            try:
                ended = ray.get(ref)
            except ray.exceptions.RayError as e:
                ended = cause(e)
            if ended is None:
                asked[servers[name].poll.remote()] = name
                continue
            del servers[name]
            warn(f"the server on node {name} stopped ({ended}); "
                 + (f"{len(servers)} still serving" if servers else "none left"))


def serve_on(address: str, selectors: list[str] | None, model: str, options: dict[str, Any],
             announce: Callable[[dict[str, Any]], None], warn: Callable[[str], None],
             reporter: Reporter, ready_file: Callable[[dict[str, Any]], None] | None = None
             ) -> str:
    """Serve ``model`` on the chosen nodes until SIGINT, SIGTERM or SIGHUP (or until every
    server has stopped: an error); ``announce`` gets every server's facts once all listen.
    Returns the name of the signal that stopped them."""
    node_argv(model, "", 1, options)  # bad options are one line before any node is asked
    connect(address, None)
    servers: list[tuple[str, Any]] = []
    stopped_by: list[str] = []
    previous = {sig: signal.signal(sig, lambda s, f: stopped_by.append(signal.Signals(s).name))
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        nodes = select_nodes(cluster_nodes(), selectors, reporter)
        names = node_names(nodes)
        check_versions(nodes, names, list(options.get("engines") or []), timeout=120)
        for node, name in zip(nodes, names, strict=True):
            actor = NodeServer.options(scheduling_strategy=pinned(node),
                                       num_cpus=node.cpus).remote(
                node_argv(model, node.address, node.cpus, options))
            servers.append((name, actor))
        def failed(i: int) -> str:
            return f"the server on node {names[i]} ({nodes[i].address}) did not start"

        _wait({actor.placed.remote(): i for i, (_, actor) in enumerate(servers)}, stopped_by,
              PLACE_TIMEOUT, lambda i: f"node {names[i]} did not give its {nodes[i].cpus:g} CPUs "
              f"to the server within {PLACE_TIMEOUT:g} s (other Ray work holds them?)", failed)
        said = _wait({actor.start.remote(START_TIMEOUT): i for i, (_, actor) in enumerate(servers)},
                     stopped_by, START_TIMEOUT + 60, lambda i: f"the server on node {names[i]} "
                     f"did not listen within {START_TIMEOUT:g} s", failed)
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
        _watch(dict(servers), stopped_by, warn)
        if not stopped_by:
            raise VisionbenchError("every node's server stopped")
        return stopped_by[0]
    except ray.exceptions.RayError as e:
        raise VisionbenchError(f"the Ray cluster failed the servers: {cause(e)}") from None
    except ConnectionError as e:  # the head lost (Ray Client)
        raise VisionbenchError(f"the Ray cluster went away: {describe(e)}") from None
    finally:
        _stop(servers)
        for sig, handler in previous.items():  # a second Ctrl-C waits for the servers' end
            signal.signal(sig, handler)


def _stop(servers: list[tuple[str, Any]]) -> None:
    """Every server stopped at once (SIGTERM, killed after STOP_SECONDS), best effort: a server
    whose node is gone went with it."""
    with contextlib.suppress(Exception):
        stopping = [actor.stop.remote() for _, actor in servers]
        if stopping:
            ray.wait(stopping, num_returns=len(stopping), timeout=STOP_SECONDS + 10)
        for _, actor in servers:
            ray.kill(actor)
    with contextlib.suppress(Exception):
        ray.shutdown()
