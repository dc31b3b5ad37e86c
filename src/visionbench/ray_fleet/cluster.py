"""The Ray cluster: connecting (a head that does not answer is one line within seconds), its alive
nodes, choosing nodes by id, hostname, address, resource or label, and checking that every node
runs the driver's visionbench and engine versions."""

from __future__ import annotations

import logging
import platform
import socket
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from visionbench.engines import all_engines
from visionbench.errors import VisionbenchError, describe
from visionbench.reporter import Reporter
from visionbench.sysinfo import available_cpus
from visionbench.version import __version__

#: Resources every Ray node has: not selectors.
RAY_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


#: The resource Ray gives its head node.
HEAD_RESOURCE = "node:__internal_head__"


#: Seconds to wait for the cluster's head to accept a connection.
CONNECT_TIMEOUT = 5.0


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
    itself retries for minutes). Never starts a cluster: Ray's own listens on every network
    interface, unauthenticated."""
    if address.strip().lower() in ("", "local"):
        raise VisionbenchError(
            f"--address {address or 'with no address'} would start a Ray cluster of its own, "
            "listening on every network interface without authentication: start one bound to "
            "loopback (ray start --head --node-ip-address 127.0.0.1 --include-dashboard false) "
            "and give --address auto")
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


def head_strategy(nodes: list[ClusterNode]) -> NodeAffinitySchedulingStrategy:
    """On the head node, whose death ends the cluster anyway (the barrier must outlive any other
    node; several nodes on one host make "the driver's node" ambiguous)."""
    head = next((n for n in nodes if HEAD_RESOURCE in n.resources), None)
    if head is None:
        return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return NodeAffinitySchedulingStrategy(head.node_id, soft=False)


def pinned(node: ClusterNode) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node.node_id, soft=False)


def check_versions(nodes: list[ClusterNode], names: list[str], engines: list[str],
                   timeout: float) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The driver's versions and each node's; one clear error naming the first node that lacks an
    engine or runs other versions than the driver."""
    mine = versions(engines)
    if mine["missing"]:
        raise VisionbenchError(f"this machine (the driver, whose versions every node must match) "
                               f"lacks {', '.join(mine['missing'])}")
    refs = [_node_versions.options(scheduling_strategy=pinned(n)).remote(engines) for n in nodes]
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
                                   f"{cause(e)}") from None
        if theirs["missing"]:
            raise VisionbenchError(f"node {name} ({node.address}) lacks {', '.join(theirs['missing'])}")
        for pkg, v in mine["versions"].items():
            if theirs["versions"].get(pkg) != v:
                raise VisionbenchError(
                    f"node {name} ({node.address}) runs {pkg} {theirs['versions'].get(pkg, 'none')}, "
                    f"the driver {v}: install the same versions on every node (docs/fleet.md)")
        found[name] = theirs
    return mine, found


def cause(e: BaseException) -> str:
    """One line for what went wrong on a node: the node's own exception where Ray wraps one."""
    if isinstance(e, ray.exceptions.NodeDiedError):
        return "the node died or left the cluster (Ray: NodeDiedError)"
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return "its worker process died: killed, or out of memory (Ray: WorkerCrashedError)"
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return describe(cause)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
