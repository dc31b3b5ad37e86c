"""visionbench fleet: one study on every node of a running Ray cluster.

The driver connects to the cluster, checks that every node runs the driver's visionbench and
engine versions, then runs one Ray task per node, pinned there by node affinity and holding all
the node's CPUs. The task runs an ordinary study (``runner.run_steps``) in a temporary directory
on its node and streams the run directory back after each measurement (a Ray streaming
generator), so the driver writes every node's results as they come and a node that dies keeps
what it had measured. ``--concurrent`` starts every node at once, and a barrier actor releases
each measurement's timed windows on all nodes together."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from visionbench import __version__
from visionbench.config import RunConfig
from visionbench.engines import all_engines
from visionbench.errors import VisionbenchError, describe
from visionbench.fleetsummary import (
    FLEET_JSON,
    NODES_DIR,
    OUTLIER_PCT,
    FleetNode,
    FleetResults,
    FleetStore,
    NodeStatus,
)
from visionbench.fsutil import atomic_write_bytes
from visionbench.results import RESULTS_JSON, Results, now
from visionbench.runner import Reporter, Task, output_dir, run_steps
from visionbench.sysinfo import available_cpus

#: Resources every Ray node has: not selectors.
RAY_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
#: Seconds a node's task may wait to be scheduled and start (a --runtime-env is installed then).
START_TIMEOUT = 300.0
START_TIMEOUT_RUNTIME_ENV = 1800.0
#: The resource Ray gives its head node.
HEAD_RESOURCE = "node:__internal_head__"
#: Seconds to wait for the cluster's head to accept a connection.
CONNECT_TIMEOUT = 5.0
#: How often the driver looks at the nodes' streams, deadlines and the user's Ctrl-C.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class FleetOptions:
    address: str
    nodes: list[str] | None = None
    concurrent: bool = False
    node_timeout: float | None = None
    outlier_pct: float = OUTLIER_PCT
    runtime_env: dict[str, Any] | None = None


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    hostname: str
    address: str
    cpus: float
    resources: dict[str, float]
    labels: dict[str, str]

    def describe(self) -> str:
        return f"{self.hostname} ({self.address}, id {self.node_id[:8]}, {self.cpus:g} CPUs)"


def _bootstrap(address: str) -> tuple[str, int] | None:
    """HOST, PORT that ``address`` leads to (``auto``: as Ray resolves it), or None if unknown."""
    if address.startswith("ray://"):
        hostport: str | None = address.removeprefix("ray://").split("/")[0]
    else:
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # Ray moved it: leave the check to ray.init
            return None
        try:
            hostport = canonicalize_bootstrap_address(address)
        except Exception:  # ray.init states a malformed address itself
            return None
    if not hostport or ":" not in hostport:
        return None
    host, _, port = hostport.rpartition(":")
    return (host, int(port)) if port.isdigit() else None


def connect(address: str, runtime_env: dict[str, Any] | None) -> None:
    """Connect to the cluster; a head that does not answer is one line within seconds (ray.init
    itself retries for minutes)."""
    target = _bootstrap(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=CONNECT_TIMEOUT).close()
        except OSError as e:
            raise VisionbenchError(
                f"no Ray cluster answers at {target[0]}:{target[1]} (--address {address}): "
                f"{e.strerror or e}") from None
    try:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.ERROR,
                 log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        raise VisionbenchError(f"cannot connect to a Ray cluster at '{address}': "
                               f"{describe(e)} (start one with `ray start --head`, or give "
                               "--address ray://HOST:10001 or HOST:6379)") from e


def cluster_nodes() -> list[ClusterNode]:
    """The cluster's alive nodes, as Ray lists them."""
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = {k: float(v) for k, v in n.get("Resources", {}).items()}
        out.append(ClusterNode(n["NodeID"], n.get("NodeManagerHostname", "?"),
                               n.get("NodeManagerAddress", "?"), res.get("CPU", 0.0), res,
                               {k: str(v) for k, v in (n.get("Labels") or {}).items()}))
    return out


def _matches(node: ClusterNode, selector: str) -> bool:
    if "=" in selector:
        key, _, value = selector.partition("=")
        return node.labels.get(key.strip()) == value.strip()
    return (selector in (node.node_id, node.hostname, node.address)
            or (len(selector) >= 6 and node.node_id.startswith(selector))
            or (selector not in RAY_RESOURCES and not selector.startswith("node:")
                and node.resources.get(selector, 0) > 0))


def select_nodes(nodes: list[ClusterNode], selectors: list[str] | None,
                 reporter: Reporter) -> list[ClusterNode]:
    """The nodes to run on: ``selectors`` (node id or its first 6+ characters, hostname, address,
    a resource name, or a label key=value) or else every alive node with CPUs."""
    if selectors is None:
        chosen = [n for n in nodes if n.cpus >= 1]
        for n in nodes:
            if n.cpus < 1:
                reporter.note(f"left out {n.describe()}: Ray schedules no CPU work there")
        if not chosen:
            raise VisionbenchError("the Ray cluster has no alive node with CPUs")
        return chosen
    chosen = []
    for s in selectors:
        hits = [n for n in nodes if _matches(n, s)]
        if not hits:
            alive = "; ".join(n.describe() for n in nodes)
            raise VisionbenchError(f"--nodes '{s}' matches no alive node (alive: {alive})")
        chosen += [n for n in hits if n not in chosen]
    for n in chosen:
        if n.cpus < 1:
            raise VisionbenchError(f"node {n.describe()} has no CPUs Ray schedules on")
    return chosen


def node_names(nodes: list[ClusterNode]) -> list[str]:
    """Hostnames, with the node id's start where a hostname repeats (several nodes on one host)."""
    hosts = [n.hostname for n in nodes]
    return [n.hostname if hosts.count(n.hostname) == 1 else f"{n.hostname}-{n.node_id[:8]}"
            for n in nodes]


def versions(engines: list[str]) -> dict[str, Any]:
    """What a node (or the driver) runs: visionbench's and each engine's package versions."""
    found = {"visionbench": __version__}
    missing = []
    for name in engines:
        cls = all_engines()[name]
        if cls.installed():
            found.update(cls().versions())
        else:
            missing.append(f"{name} (pip install 'visionbench[{cls.extra}]')")
    return {"versions": found, "missing": missing, "python": platform.python_version(),
            "cpus_available": available_cpus()}


@ray.remote(max_retries=0, num_cpus=0)
def _node_versions(engines: list[str]) -> dict[str, Any]:
    return versions(engines)


def _head(nodes: list[ClusterNode]) -> NodeAffinitySchedulingStrategy:
    """On the head node, whose death ends the cluster anyway (the barrier must outlive any other
    node; several nodes on one host make "the driver's node" ambiguous)."""
    head = next((n for n in nodes if HEAD_RESOURCE in n.resources), None)
    if head is None:
        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return NodeAffinitySchedulingStrategy(head.node_id, soft=False)


def _pinned(node: ClusterNode) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node.node_id, soft=False)


def check_versions(nodes: list[ClusterNode], names: list[str], engines: list[str],
                   timeout: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The driver's versions and each node's; one clear error naming the first node that lacks an
    engine or runs other versions than the driver."""
    mine = versions(engines)
    if mine["missing"]:
        raise VisionbenchError(f"this machine (the driver, whose versions every node must match) "
                               f"lacks {', '.join(mine['missing'])}")
    refs = [_node_versions.options(scheduling_strategy=_pinned(n)).remote(engines) for n in nodes]
    found: dict[str, dict[str, str]] = {}
    for node, name, ref in zip(nodes, names, refs, strict=True):
        try:
            theirs = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise VisionbenchError(f"node {name} ({node.address}) did not answer the version check "
                                   f"within {timeout:g} s (busy, or still installing the "
                                   "--runtime-env)") from None
        except ray.exceptions.RayError as e:
            raise VisionbenchError(f"node {name} ({node.address}) cannot run visionbench: "
                                   f"{_cause(e)}") from None
        if theirs["missing"]:
            raise VisionbenchError(f"node {name} ({node.address}) lacks {', '.join(theirs['missing'])}")
        for pkg, v in mine["versions"].items():
            if theirs["versions"].get(pkg) != v:
                raise VisionbenchError(
                    f"node {name} ({node.address}) runs {pkg} {theirs['versions'].get(pkg, 'none')}, "
                    f"the driver {v}: install the same versions on every node (README: Fleet runs)")
        found[name] = theirs
    return mine, found


def _cause(e: BaseException) -> str:
    """One line for what went wrong on a node: the node's own exception where Ray wraps one."""
    if isinstance(e, ray.exceptions.NodeDiedError):
        return "the node died or left the cluster (Ray: NodeDiedError)"
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return "its worker process died: killed, or out of memory (Ray: WorkerCrashedError)"
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return describe(cause)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


@ray.remote(num_cpus=0, max_restarts=0)
class Barrier:
    """Releases each measurement on every node together: a measurement's windows start once every
    node still running has reached it (waiting at it, or passing it because it does not run it)."""

    def __init__(self, parties: list[str]) -> None:
        self.parties = set(parties)
        self.left: set[str] = set()
        self.arrived: dict[str, set[str]] = {}
        self.events: dict[str, asyncio.Event] = {}
        self.released: dict[str, float] = {}

    def _check(self, key: str) -> None:
        if key not in self.released and self.parties - self.left <= self.arrived.get(key, set()):
            self.released[key] = time.time()
            self.events.setdefault(key, asyncio.Event()).set()

    async def wait(self, key: str, party: str) -> float:
        """Wait until every node still running has reached ``key``; the release time."""
        self.arrived.setdefault(key, set()).add(party)
        self._check(key)
        await self.events.setdefault(key, asyncio.Event()).wait()
        return self.released[key]

    async def passed(self, key: str, party: str) -> None:
        self.arrived.setdefault(key, set()).add(party)
        self._check(key)

    async def leave(self, party: str) -> None:
        self.left.add(party)
        for key in list(self.arrived):
            self._check(key)


PHASES = ("ready", "go")


class _NodeReporter(Reporter):
    """On a node: tells the barrier of every phase of a measurement the node did not reach
    (skipped, or failed before it), so the other nodes never wait for it."""

    def __init__(self, barrier: Any, name: str, waited: set[str]) -> None:
        self.barrier, self.name, self.waited = barrier, name, waited

    def done(self, m: Any) -> None:
        for key in (f"{m.id}/{phase}" for phase in PHASES):
            if key not in self.waited:
                ray.get(self.barrier.passed.remote(key, self.name))


def _changed(directory: Path, sent: dict[str, tuple[int, int]]) -> dict[str, bytes]:
    """The files of a run directory new or changed since the last call."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = str(p.relative_to(directory))
        st = p.stat()
        if sent.get(rel) != (st.st_size, st.st_mtime_ns):
            out[rel] = p.read_bytes()
            sent[rel] = (st.st_size, st.st_mtime_ns)
    return out


@ray.remote(num_returns="streaming", max_retries=0)
def node_study(cfg: RunConfig, command: list[str], node: dict[str, Any],
               barrier: Any | None) -> Iterator[dict[str, bytes]]:
    """On a node: the study in a temporary run directory, its new files yielded after each
    measurement."""
    directory = Path(tempfile.mkdtemp(prefix="visionbench-fleet-"))
    sent: dict[str, tuple[int, int]] = {}
    waited: set[str] = set()
    reporter = Reporter() if barrier is None else _NodeReporter(barrier, node["name"], waited)

    def start(task: Task, phase: str) -> float:
        key = f"{task.id}/{phase}"
        waited.add(key)
        return ray.get(barrier.wait.remote(key, node["name"]))

    # Where the task really runs, as the node itself reports it (the driver asked for node_id).
    node = {**node, "ran_on_node_id": ray.get_runtime_context().get_node_id(),
            "ran_on_hostname": socket.gethostname()}
    try:
        yield {}  # started: the driver knows the task was scheduled
        for _ in run_steps(replace(cfg, output=directory), reporter, command,
                           None if barrier is None else start, node):
            yield _changed(directory, sent)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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


def _drain(store: FleetStore, streams: list[_Stream], reporter: Reporter,
           barrier: Any | None) -> None:
    """Write what each node sends as it comes; a node that fails or passes its deadline ends
    with its reason, the others go on."""
    live = list(streams)
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
                    _end(store, s, "failed", _cause(e), reporter, barrier)
                    continue
                _write(store, s, files, reporter)
                store.save()
            t = time.monotonic()
            for s in [s for s in live if not s.started and t > s.start_by]:
                live.remove(s)
                ray.cancel(s.gen, force=True)
                _end(store, s, "failed", f"not started within {s.start_by - s.submitted:g} s: Ray "
                     f"could not give one task all {s.node.cpus:g} CPUs of the node (other work "
                     "holds some?)", reporter, barrier)
            for s in [s for s in live if s.deadline is not None and t > s.deadline]:
                live.remove(s)
                ray.cancel(s.gen, force=True)
                _end(store, s, "timed-out", f"no result within --node-timeout "
                     f"{store.fleet.node_timeout:g} s; stopped", reporter, barrier)
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
    return len(cfg.engines) * sum(len(cfg.batches(p, m)) for p in cfg.precisions for m in cfg.modes)


def _launch(node: FleetNode, cfg: RunConfig, command: list[str], mode: str,
            barrier: Any | None, start_timeout: float, reporter: Reporter) -> _Stream:
    threads = cfg.threads if cfg.threads_explicit else max(1, int(node.cpus))
    info = {"name": node.name, "node_id": node.node_id, "hostname": node.hostname,
            "address": node.address, "ray_cpus": node.cpus, "fleet_mode": mode}
    gen = node_study.options(num_cpus=node.cpus, scheduling_strategy=_pinned(node)).remote(
        replace(cfg, threads=threads), command, info, barrier)
    submitted = time.monotonic()
    bar = reporter.steps(f"node {node.name}", _planned(cfg)) or (lambda done, state: None)
    bar(0, "waiting for Ray to start it")
    return _Stream(node, gen, threads, submitted, submitted + start_timeout, bar)


def _absolute(cfg: RunConfig) -> RunConfig:
    """Paths that exist here made absolute: a node's worker does not run in this directory."""
    def fix(p: Path | None) -> Path | None:
        return p.resolve() if p is not None and p.exists() else p

    model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    return replace(cfg, model=model, weights=fix(cfg.weights), data=fix(cfg.data),
                   labels=fix(cfg.labels), calibration_data=fix(cfg.calibration_data))


def run_fleet(cfg: RunConfig, opts: FleetOptions, reporter: Reporter,
              command: list[str]) -> FleetStore:
    """Connect, check the nodes, run the study on each, and keep every node's results."""
    if opts.concurrent and cfg.iterations is not None:
        raise VisionbenchError("--concurrent times every node over the same windows: give "
                               "--duration, not --iterations")
    if (cfg.output / FLEET_JSON).exists() or (cfg.output / NODES_DIR).exists():
        raise VisionbenchError(f"{cfg.output} already holds a fleet run: give another --output")
    cfg = _absolute(cfg)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    connect(opts.address, opts.runtime_env)
    try:
        alive = cluster_nodes()
        nodes = select_nodes(alive, opts.nodes, reporter)
        names = node_names(nodes)
        start_timeout = START_TIMEOUT_RUNTIME_ENV if opts.runtime_env else START_TIMEOUT
        mine, found = check_versions(nodes, names, cfg.engines, start_timeout)
        for n, name in zip(nodes, names, strict=True):
            if found[name]["cpus_available"] < n.cpus:
                reporter.note(f"note: Ray counts {n.cpus:g} CPUs on {name}, but a process there may "
                              f"use {found[name]['cpus_available']}: threads will share cores")
        output_dir(cfg.output)
        config = cfg.as_dict()
        if not cfg.threads_explicit:
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
        store = FleetStore(cfg.output, fleet)
        reporter.note(f"{len(nodes)} nodes, {fleet.mode}: "
                      + ", ".join(f"{n.name} ({n.address}, {n.cpus:g} CPUs)" for n in fleet.nodes))
        with store.recording():
            try:
                if opts.concurrent:
                    barrier = Barrier.options(scheduling_strategy=_head(alive)).remote(names)
                    _drain(store, [_launch(n, cfg, command, fleet.mode, barrier, start_timeout,
                                           reporter) for n in fleet.nodes], reporter, barrier)
                else:
                    for n in fleet.nodes:
                        _drain(store, [_launch(n, cfg, command, fleet.mode, None, start_timeout,
                                               reporter)], reporter, None)
            except ray.exceptions.RayError as e:  # the cluster itself failed (head, GCS)
                raise VisionbenchError(f"the Ray cluster failed: {_cause(e)}; the results so far "
                                       f"are kept in {cfg.output}") from e
        store.finish("complete" if all(n.status == "complete" for n in fleet.nodes) else "failed")
        return store
    finally:
        ray.shutdown()
