"""visionbench fleet: one study on every node of a running Ray cluster.

The driver connects to the cluster, checks that every node runs the driver's visionbench and
engine versions, then runs one Ray task per node, pinned there by node affinity and holding all
the node's CPUs. The task runs an ordinary study (``scenarios.study.run_steps``) in a temporary directory
on its node and streams the run directory back after each measurement (a Ray streaming
generator), so the driver writes every node's results as they come and a node that dies keeps
what it had measured. ``--concurrent`` starts every node at once, and a barrier actor releases
each measurement's timed windows on all nodes together."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_bytes
from visionbench.ray_fleet.cluster import (
    cause,
    check_versions,
    cluster_nodes,
    connect,
    head_strategy,
    node_names,
    pinned,
    select_nodes,
)
from visionbench.ray_fleet.node import Barrier, node_study
from visionbench.reporter import Reporter
from visionbench.results import RESULTS_JSON, Results, now
from visionbench.results.fleet import (
    FLEET_JSON,
    NODES_DIR,
    FleetNode,
    FleetResults,
    FleetStore,
    NodeStatus,
)
from visionbench.results.policy import check_output, claim, recover
from visionbench.settings import Fleet

#: Seconds a node's task may wait to be scheduled and start (a --runtime-env is installed then).
START_TIMEOUT = 300.0


START_TIMEOUT_RUNTIME_ENV = 1800.0


#: How often the driver looks at the nodes' streams, deadlines and the user's Ctrl-C.
POLL_SECONDS = 0.5


#: How often the driver asks Ray which nodes it has marked dead. Ray fails a task on a node cut
#: off the network only when the driver's own connection to that node's worker gives up (6.5
#: minutes after the cut in docs/fleet.md's test), although its health check marks the node dead
#: within about a minute: the driver ends such a node's stream itself as soon as Ray says so.
ALIVE_SECONDS = 2.0


@dataclass
class _Stream:
    node: FleetNode
    gen: Any
    threads: int
    submitted: float
    start_by: float
    bar: Callable[[int, str], None]
    deadline: float | None = None
    started: bool = False


def _write(store: FleetStore, s: _Stream, files: dict[str, bytes], reporter: Reporter) -> None:
    node = s.node
    base = store.node_dir(node)
    for rel, data in files.items():
        atomic_write_bytes(base / rel, data)
    if RESULTS_JSON in files:
        results = Results.model_validate_json(files[RESULTS_JSON])
        if results.measurements:
            store.stored()
        for m in results.measurements[node.measurements:]:
            figure = (f"{m.throughput_ips:.1f} images/s" if m.mode == "throughput" else
                      f"p50 {m.latency.p50_ms:.2f} ms") if m.status == "ok" and m.latency else (
                      f"{m.status}: {m.reason}")
            reporter.note(f"node {node.name}: {m.id} {figure}")
        node.measurements = len(results.measurements)
        s.bar(node.measurements, f"{node.measurements} measured")


def _end(store: FleetStore, s: _Stream, status: NodeStatus, reason: str | None,
         reporter: Reporter, barrier: Any | None) -> None:
    n = s.node
    if store.mark(n, "failed") == "failed" and status == "complete":
        status, reason = "failed", "some measurements failed (see the node's results)"
    n.status, n.reason = status, reason
    n.finished_at, n.seconds = now(), round(time.monotonic() - s.submitted, 1)
    s.bar(n.measurements, status)
    store.save()
    if barrier is not None:
        barrier.leave.remote(n.name)
    reporter.note(f"node {n.name}: {status}" + (f": {reason}" if reason else "")
                  + f" ({n.measurements} measurements, {n.seconds:.0f} s)")


def _dead(node_ids: set[str]) -> dict[str, str]:
    """Those of ``node_ids`` that Ray has marked dead, with its reason."""
    return {n["NodeID"]: n.get("DeathReasonMessage") or "no reason given" for n in ray.nodes()
            if n["NodeID"] in node_ids and not n.get("Alive")}


def _drain(store: FleetStore, streams: list[_Stream], reporter: Reporter,
           barrier: Any | None) -> None:
    """Write what each node sends as it comes; a node that fails, that Ray marks dead or that
    passes its deadline ends with its reason, the others go on."""
    live = list(streams)
    checked = time.monotonic()

    def stop(s: _Stream, status: NodeStatus, reason: str) -> None:
        live.remove(s)
        ray.cancel(s.gen, force=True)
        _end(store, s, status, reason, reporter, barrier)

    try:
        while live:
            ready, _ = ray.wait([s.gen for s in live], num_returns=1, timeout=POLL_SECONDS)
            for s in [s for s in live if s.gen in ready]:
                try:
                    files = ray.get(next(s.gen))
                    if not s.started:
                        _started(store, s, reporter)
                except StopIteration:
                    live.remove(s)
                    _end(store, s, "complete", None, reporter, barrier)
                    continue
                except ray.exceptions.RayError as e:
                    live.remove(s)
                    _end(store, s, "failed", cause(e), reporter, barrier)
                    continue
                _write(store, s, files, reporter)
                store.save()
            t = time.monotonic()
            if live and t - checked >= ALIVE_SECONDS:
                checked = t
                dead = _dead({s.node.node_id for s in live})
                for s in [s for s in live if s.node.node_id in dead]:
                    stop(s, "failed", "the node died or left the cluster (Ray marked it dead: "
                         f"{dead[s.node.node_id]})")
            for s in [s for s in live if not s.started and t > s.start_by]:
                stop(s, "failed", f"not started within {s.start_by - s.submitted:g} s: Ray could "
                     f"not give one task all {s.node.cpus:g} CPUs of the node (other work holds "
                     "some?)")
            for s in [s for s in live if s.deadline is not None and t > s.deadline]:
                stop(s, "timed-out", f"no result within --node-timeout "
                     f"{store.fleet.node_timeout:g} s; stopped")
    except BaseException:
        for s in live:
            ray.cancel(s.gen, force=True)
        raise


def _started(store: FleetStore, s: _Stream, reporter: Reporter) -> None:
    s.started = True
    s.bar(0, "running")
    s.node.status, s.node.started_at = "running", now()
    if store.fleet.node_timeout is not None:
        s.deadline = time.monotonic() + store.fleet.node_timeout
    store.save()
    reporter.note(f"node {s.node.name}: started on {s.node.address}, {s.threads} threads")


def _planned(cfg: RunConfig) -> int:
    """Measurements each node records: every engine x precision x mode x batch size."""
    st = cfg.study
    return len(st.engines) * sum(len(cfg.batches(p, m)) for p in st.precisions for m in st.modes)


#: What this fleet run's node processes carry in their environment (``launch.process.FLEET_ENV``).
_RUN_MARK = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def _launch(node: FleetNode, cfg: RunConfig, command: list[str], mode: str,
            barrier: Any | None, start_timeout: float, reporter: Reporter) -> _Stream:
    threads = cfg.launch.threads if cfg.launch.threads_explicit else max(1, int(node.cpus))
    info = {"name": node.name, "node_id": node.node_id, "hostname": node.hostname,
            "address": node.address, "ray_cpus": node.cpus, "fleet_mode": mode,
            "fleet_run": _RUN_MARK}
    gen = node_study.options(num_cpus=node.cpus, scheduling_strategy=pinned(node)).remote(
        cfg.replace(threads=threads), command, info, barrier)
    submitted = time.monotonic()
    bar = reporter.steps(f"node {node.name}", _planned(cfg)) or (lambda done, state: None)
    bar(0, "waiting for Ray to start it")
    return _Stream(node, gen, threads, submitted, submitted + start_timeout, bar)


def _absolute(cfg: RunConfig) -> RunConfig:
    """Paths that exist here made absolute: a node's worker does not run in this directory."""
    def fix(p: Path | None) -> Path | None:
        return p.resolve() if p is not None and p.exists() else p

    model = str(Path(cfg.study.model).resolve()) if Path(cfg.study.model).exists() else cfg.study.model
    return cfg.replace(model=model, weights=fix(cfg.study.weights), data=fix(cfg.inputs.data),
                       labels=fix(cfg.inputs.labels), calibration_data=fix(cfg.inputs.calibration_data))


#: What marks a directory as holding a run: a fleet's or a single run's.
MARKS = (FLEET_JSON, NODES_DIR, RESULTS_JSON)


def run_fleet(cfg: RunConfig, opts: Fleet, reporter: Reporter,
              command: list[str]) -> FleetStore:
    """Connect, check the nodes, run the study on each, and keep every node's results."""
    if opts.concurrent and cfg.timing.iterations is not None:
        raise VisionbenchError("--concurrent times every node over the same windows: give "
                               "--duration, not --iterations")
    if cfg.existing == "append":
        raise VisionbenchError("a fleet run is not appended to: its nodes are chosen and timed as "
                               "one; give another --output, or --overwrite")
    for note in recover(cfg.output):
        reporter.note(note)
    check_output(cfg.output, cfg.existing, MARKS, appendable=False)  # before connecting
    cfg = _absolute(cfg)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    connect(opts.address, opts.runtime_env)
    try:
        alive = cluster_nodes()
        nodes = select_nodes(alive, opts.nodes, reporter)
        names = node_names(nodes)
        start_timeout = START_TIMEOUT_RUNTIME_ENV if opts.runtime_env else START_TIMEOUT
        mine, found = check_versions(nodes, names, cfg.study.engines, start_timeout)
        for n, name in zip(nodes, names, strict=True):
            if found[name]["cpus_available"] < n.cpus:
                reporter.note(f"note: Ray counts {n.cpus:g} CPUs on {name}, but a process there may "
                              f"use {found[name]['cpus_available']}: threads will share cores")
        lock, _, aside = claim(cfg.output, cfg.existing, command, MARKS, appendable=False)
        config = cfg.as_dict()
        if not cfg.launch.threads_explicit:
            config["threads"] = "each node's CPUs"
        fleet = FleetResults(
            created_at=now(), command=command, address=opts.address,
            mode="concurrent" if opts.concurrent else "sequential", node_timeout=opts.node_timeout,
            outlier_pct=opts.outlier_pct,
            driver={"hostname": socket.gethostname(), "versions": mine["versions"],
                    "python": mine["python"], "ray": ray.__version__,
                    "cluster": ray.get_runtime_context().gcs_address},
            config=config,
            nodes=[FleetNode(name=name, node_id=n.node_id, hostname=n.hostname, address=n.address,
                             cpus=n.cpus, resources=n.resources, labels=n.labels,
                             versions=found[name]["versions"], dir=f"{NODES_DIR}/{name}")
                   for n, name in zip(nodes, names, strict=True)],
        )
        try:
            store = FleetStore(cfg.output, fleet, lock, aside)
        except BaseException as e:  # fleet.json cannot be written: nothing of this run is kept
            lock.abandon()
            if aside is not None:
                aside.undo(e)
            raise
        reporter.note(f"{len(nodes)} nodes, {fleet.mode}: "
                      + ", ".join(f"{n.name} ({n.address}, {n.cpus:g} CPUs)" for n in fleet.nodes))
        with store.recording():
            try:
                if opts.concurrent:
                    barrier = Barrier.options(scheduling_strategy=head_strategy(alive)).remote(names)
                    _drain(store, [_launch(n, cfg, command, fleet.mode, barrier, start_timeout,
                                           reporter) for n in fleet.nodes], reporter, barrier)
                else:
                    for n in fleet.nodes:
                        _drain(store, [_launch(n, cfg, command, fleet.mode, None, start_timeout,
                                               reporter)], reporter, None)
            except ray.exceptions.RayError as e:  # the cluster itself failed (head, GCS)
                raise VisionbenchError(f"the Ray cluster failed: {cause(e)}; the results so far "
                                       f"are kept in {cfg.output}") from e
        store.finish("complete" if all(n.status == "complete" for n in fleet.nodes) else "failed")
        return store
    finally:
        ray.shutdown()
