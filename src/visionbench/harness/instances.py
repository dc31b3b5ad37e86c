"""Several pinned processes timed over the same window: the launcher behind ``--instances``,
``--cores-per-instance`` and ``--layout``.

It knows no engine. Each instance is a fresh Python process running a target function
(``module:function``) as ``target(payload, barrier)``; the target prepares its work, calls
``barrier()`` when ready to time, and returns a picklable value. The launcher starts every
instance, waits until all are at the barrier, reads back each one's CPU affinity, then releases
them together. Instance 0 starts alone first, so that what it caches (a quantized model) is
ready for the others instead of being built N times at once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from visionbench.errors import VisionbenchError, describe
from visionbench.harness.timing import Timing

LayoutName = Literal["throughput", "latency", "custom"]
LAYOUTS = ("throughput", "latency", "reference")
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


@dataclass
class _Child:
    index: int
    cores: tuple[int, ...]
    proc: subprocess.Popen
    ready: int  # read end of the child's ready pipe
    go: int  # write end of the go pipe
    result: Path
    log: Path
    affinity: list[int] | None = None


def _failure(c: _Child) -> str:
    """Why an instance failed, in one line: its own error, or the signal that killed it."""
    try:
        out = pickle.loads(c.result.read_bytes())
        if "error" in out:
            return str(out["error"])
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    rc = c.proc.returncode
    why = f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0 else \
        f"exited with status {rc}"
    try:
        tail = [ln for ln in c.log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        tail = []
    return why + (f" ({tail[-1].strip()})" if tail else "")


class InstanceFailed(VisionbenchError):
    pass


def _start(i: int, cores: tuple[int, ...], target: str, payload: Any, tmp: Path,
           nodes: list[list[int]]) -> _Child:
    job, result, log = tmp / f"job-{i}.pkl", tmp / f"result-{i}.pkl", tmp / f"log-{i}.txt"
    job.write_bytes(pickle.dumps(payload))
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    cpus = ",".join(map(str, cores))
    prefix = (["numactl", f"--physcpubind={cpus}", "--localalloc"]
              if len(nodes) > 1 and shutil.which("numactl") else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "visionbench.harness.instances", target, str(job),
             str(result), str(ready_w), str(go_r), cpus],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            pass_fds=(ready_w, go_r),
        )
    os.close(ready_w)
    os.close(go_r)
    return _Child(i, cores, proc, ready_r, go_w, result, log)


def _await_ready(children: Sequence[_Child]) -> None:
    """Block until every child is at the barrier; a child that ends first fails the lot."""
    sel = selectors.DefaultSelector()
    for c in children:
        sel.register(c.ready, selectors.EVENT_READ, c)
    waiting = len(children)
    try:
        while waiting:
            for key, _ in sel.select():
                c = key.data
                data = os.read(c.ready, 64)
                sel.unregister(c.ready)
                waiting -= 1
                if data.strip() != b"ready":
                    c.proc.wait()
                    raise InstanceFailed(
                        f"instance {c.index} (cores {','.join(map(str, c.cores))}) failed before "
                        f"timing: {_failure(c)}")
                try:
                    c.affinity = sorted(os.sched_getaffinity(c.proc.pid))
                except (OSError, AttributeError):
                    c.affinity = []
    finally:
        sel.close()


def run_instances(target: str, payloads: Sequence[Any], layout: Layout, nodes: list[list[int]],
                  tick: Callable[[float], None] | None = None,
                  before_release: Callable[[], None] | None = None) -> list[Instance]:
    """Run ``target`` once per instance of ``layout`` (``payloads[i]`` to instance i), released
    together from a barrier (once ``before_release`` returns, when given). Any instance failing
    fails the whole run with its error."""
    children: list[_Child] = []
    with tempfile.TemporaryDirectory(prefix="visionbench-instances-") as t:
        tmp = Path(t)
        try:
            children.append(_start(0, layout.cores[0], target, payloads[0], tmp, nodes))
            _await_ready(children)
            rest = [_start(i, cores, target, payloads[i], tmp, nodes)
                    for i, cores in enumerate(layout.cores) if i]
            children.extend(rest)
            _await_ready(rest)
            if before_release is not None:
                before_release()
            for c in children:
                os.write(c.go, b"go\n")
            t0 = time.monotonic()
            while any(c.proc.poll() is None for c in children):
                if any(c.proc.returncode not in (None, 0) for c in children):
                    break  # one failed: do not wait for the others
                if tick:
                    tick(time.monotonic() - t0)
                time.sleep(0.1)
            failed = [c for c in children if c.proc.returncode not in (None, 0)]
            if failed:
                raise InstanceFailed("; ".join(
                    f"instance {c.index} (cores {','.join(map(str, c.cores))}) failed: "
                    f"{_failure(c)}" for c in failed))
            out = []
            for c in children:
                value = pickle.loads(c.result.read_bytes())["value"]
                out.append(Instance(c.index, c.cores, c.affinity or [], value))
            return out
        finally:
            for c in children:
                for fd in (c.ready, c.go):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                if c.proc.poll() is None:
                    c.proc.kill()
                    c.proc.wait()


def combined_throughput(timings: Sequence[Timing]) -> list[float]:
    """Images/s of all instances together, per repeat: the sum of each instance's throughput in
    that repeat (instances time their windows from the same start)."""
    repeats = min(len(t.windows) for t in timings)
    return [float(sum(t.windows[r].throughput for t in timings)) for r in range(repeats)]


def pooled_latencies(timings: Sequence[Timing]) -> np.ndarray:
    return np.concatenate([w.latencies_ns for t in timings for w in t.windows])


def _child(argv: list[str]) -> int:
    target, job, result, ready_fd, go_fd, cpus = argv
    os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])  # before any thread pool starts
    ready, go = int(ready_fd), int(go_fd)

    def barrier() -> None:
        os.write(ready, b"ready\n")
        if os.read(go, 16).strip() != b"go":
            raise SystemExit(3)  # the launcher gave up (another instance failed)

    try:
        module, _, name = target.partition(":")
        fn = getattr(importlib.import_module(module), name)
        value = fn(pickle.loads(Path(job).read_bytes()), barrier)
    except SystemExit:
        raise
    except BaseException as e:  # reported by the launcher as this instance's error
        Path(result).write_bytes(pickle.dumps({"error": describe(e)}))
        return 1
    Path(result).write_bytes(pickle.dumps({"value": value}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
