"""What runs on a node: the study in a temporary run directory, its new files streamed back after
each measurement; and the barrier actor that releases each measurement on every node together
(``--concurrent``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from visionbench.config import RunConfig
from visionbench.launch.process import FLEET_ENV
from visionbench.reporter import Reporter
from visionbench.scenarios.scenario import Task
from visionbench.scenarios.study import run_steps


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
    # This node's processes (its worker processes inherit it) are known to the other nodes'.
    os.environ[FLEET_ENV] = node["fleet_run"]
    try:
        yield {}  # started: the driver knows the task was scheduled
        fresh = cfg.replace(output=directory, existing="refuse", replace_records=False)
        for _ in run_steps(fresh, reporter, command,
                           None if barrier is None else start, node):
            yield _changed(directory, sent)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
