"""Several pinned processes timed over the same window: the launcher behind ``--instances``,
``--cores-per-instance`` and ``--layout``.

It knows no engine. Each instance is a fresh Python process (``launch``: pinned before its
imports, under numactl where there are several NUMA nodes) running a target function
(``module:function``) as ``target(payload, barrier)``; the target prepares its work, calls
``barrier()`` when ready to time, and returns a picklable value. The launcher starts every
instance, waits until all are at the barrier, reads back each one's CPU affinity, then releases
them together. Instance 0 starts alone first, so that what it caches (a quantized model) is
ready for the others instead of being built N times at once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

import numpy as np

from visionbench.errors import VisionbenchError
from visionbench.harness.timing import Timing
from visionbench.launch.child import resolve
from visionbench.launch.process import Child, ChildDied, Launch
from visionbench.launch.protocol import Failed, Go, Ready, Result

LayoutName = Literal["throughput", "latency", "custom"]
#: Cores per instance in the reference scripts' latency layout.
LATENCY_CORES = 4


@dataclass(frozen=True)
class Layout:
    """Which cores each instance runs on, and why this shape on this machine."""

    name: LayoutName
    cores: tuple[tuple[int, ...], ...]  # one tuple of CPU numbers per instance
    reason: str

    @property
    def instances(self) -> int:
        return len(self.cores)

    @property
    def cores_per_instance(self) -> int:
        return len(self.cores[0])

    def describe(self) -> str:
        return f"{self.instances} x {self.cores_per_instance}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def reference_layout(name: Literal["throughput", "latency"], nodes: list[list[int]]) -> Layout:
    """The reference scripts' layouts: throughput = one instance per NUMA node with all its
    cores; latency = instances of 4 cores filling each node (fewer cores where a node has fewer)."""
    if name == "throughput":
        return Layout("throughput", tuple(tuple(n) for n in nodes),
                      f"one instance per NUMA node ({_count(len(nodes), 'node')} here), each on "
                      f"all of its node's physical cores")
    smallest = min(len(n) for n in nodes)
    k = min(LATENCY_CORES, smallest)
    cores = tuple(tuple(n[i: i + k]) for n in nodes for i in range(0, len(n) - k + 1, k))
    reason = f"instances of {LATENCY_CORES} cores filling each NUMA node"
    if k < LATENCY_CORES:
        reason = (f"the reference layout puts {LATENCY_CORES} cores in each latency instance; "
                  f"this machine has {_count(smallest, 'physical core')} per NUMA node available, "
                  f"so {_count(len(cores), 'instance')} of {_count(k, 'core')}")
    return Layout("latency", cores, reason)


def custom_layout(instances: int | None, cores_per_instance: int | None,
                  nodes: list[list[int]]) -> Layout:
    """N instances of K cores: consecutive physical cores, node by node. Either number may be
    left out: it then fills the machine."""
    flat = [c for n in nodes for c in n]
    total = len(flat)
    if instances is None and cores_per_instance is None:
        raise ValueError("a custom layout needs --instances or --cores-per-instance")
    k = cores_per_instance or max(total // (instances or 1), 1)
    n = instances or total // k
    if n < 1 or n * k > total:
        n = max(n, 1)
        raise VisionbenchError(
            f"{_count(n, 'instance')} of {_count(k, 'core')} need{'s' if n == 1 else ''} "
            f"{n * k} physical cores; this machine has {total} available")
    cores = tuple(tuple(flat[i * k: (i + 1) * k]) for i in range(n))
    node_of = {c: i for i, node in enumerate(nodes) for c in node}
    spanning = sum(len({node_of[c] for c in inst}) > 1 for inst in cores)
    reason = f"{_count(n, 'instance')} of {_count(k, 'core')} as asked"
    if spanning:
        reason += f"; {_count(spanning, 'instance')} span NUMA nodes (slower memory access)"
    return Layout("custom", cores, reason)


def pinning(nodes: list[list[int]]) -> str:
    """How instances are pinned here: numactl (with local memory) where the machine has several
    NUMA nodes and numactl is installed, else the CPU affinity alone."""
    if len(nodes) > 1 and shutil.which("numactl"):
        return "numactl --physcpubind --localalloc, and sched_setaffinity"
    return "sched_setaffinity" + ("" if len(nodes) > 1 else " (one NUMA node: memory is local)")


@dataclass
class Instance:
    """One finished instance: the cores asked for, the affinity read back while it waited at the
    barrier, and what its target returned."""

    index: int
    cores: tuple[int, ...]
    affinity: list[int]
    value: Any


def _start(i: int, cores: tuple[int, ...], target: str, payload: Any, tmp: Path,
           nodes: list[list[int]], env: dict[str, str]) -> Child:
    how = Launch(f"instance {i} (cores {','.join(map(str, cores))})", cpus=cores,
                 env={**env, "VISIONBENCH_INSTANCE": str(i)},
                 numactl=len(nodes) > 1 and shutil.which("numactl") is not None,
                 log=tmp / f"log-{i}.txt")
    return Child("visionbench.harness.instances:instance", (target, payload), how)


class InstanceFailed(VisionbenchError):
    pass


def _failure(c: Child, msg: Any) -> str:
    """Why an instance failed, in one line: its own error, or why its process ended."""
    return msg.error if isinstance(msg, Failed) else c.why().removeprefix(c.how.name + " ")


def _next(c: Child) -> Any:
    try:
        return c.recv()
    except ChildDied:
        return None


def _await_ready(children: Sequence[Child]) -> dict[int, list[int]]:
    """Block until every child is at the barrier (each one's affinity, read back there); a child
    that ends first fails the lot."""
    affinity = {}
    for c in children:
        msg = _next(c)
        if not isinstance(msg, Ready):
            raise InstanceFailed(f"{c.how.name} failed before timing: {_failure(c, msg)}")
        affinity[c.pid] = c.affinity()
    return affinity


def run_instances(target: str, payloads: Sequence[Any], layout: Layout, nodes: list[list[int]],
                  tick: Callable[[float], None] | None = None,
                  before_release: Callable[[], None] | None = None,
                  env: dict[str, str] | None = None) -> list[Instance]:
    """Run ``target`` once per instance of ``layout`` (``payloads[i]`` to instance i), released
    together from a barrier (once ``before_release`` returns, when given), each process with
    ``env`` set over this one's. Any instance failing fails the whole run with its error."""
    children: list[Child] = []
    finished = False
    with tempfile.TemporaryDirectory(prefix="visionbench-instances-") as t:
        tmp = Path(t)
        try:
            children.append(_start(0, layout.cores[0], target, payloads[0], tmp, nodes, env or {}))
            affinity = _await_ready(children)
            rest = [_start(i, cores, target, payloads[i], tmp, nodes, env or {})
                    for i, cores in enumerate(layout.cores) if i]
            children.extend(rest)
            affinity.update(_await_ready(rest))
            if before_release is not None:
                before_release()
            for c in children:
                c.send(Go())
            t0 = time.monotonic()
            values: dict[int, Any] = {}
            while len(values) < len(children):
                for conn in wait([c.conn for c in children if c.pid not in values], timeout=0.1):
                    c = next(c for c in children if c.conn is conn)
                    msg = _next(c)
                    if not isinstance(msg, Result):  # one failed: do not wait for the others
                        raise InstanceFailed(f"{c.how.name} failed: {_failure(c, msg)}")
                    values[c.pid] = msg.value
                if tick:
                    tick(time.monotonic() - t0)
            finished = True
            return [Instance(i, c.how.cpus or (), affinity[c.pid], values[c.pid])
                    for i, c in enumerate(children)]
        finally:
            for c in children:
                c.close(finished)


def instance(conn: Connection, job: tuple[str, Any]) -> None:
    """One instance (``launch.child``'s target): ``target(payload, barrier)``, its value sent
    back."""
    target, payload = job
    fn = resolve(target)

    def barrier() -> None:
        conn.send(Ready())
        go = conn.recv()
        if not (isinstance(go, Go) and go.ok):
            raise SystemExit(3)  # the launcher gave up (another instance failed)

    conn.send(Result(fn(payload, barrier)))


def combined_throughput(timings: Sequence[Timing]) -> list[float]:
    """Images/s of all instances together, per repeat: the sum of each instance's throughput in
    that repeat (instances time their windows from the same start)."""
    repeats = min(len(t.windows) for t in timings)
    return [float(sum(t.windows[r].throughput for t in timings)) for r in range(repeats)]


def pooled_latencies(timings: Sequence[Timing]) -> np.ndarray:
    return np.concatenate([w.latencies_ns for t in timings for w in t.windows])
