"""A fleet run on disk (fleet.json beside one ordinary run directory per node) and what it says:
each node against the fleet median, outliers, and the cluster's aggregate throughput.

Knows nothing of Ray: ``visionbench report`` and ``compare`` read fleet runs without it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_text, failure
from visionbench.results import (
    RESULTS_JSON,
    CellKey,
    Measurement,
    Results,
    load,
    now,
    read_json,
)
from visionbench.results.rundir import Aside, RunLock
from visionbench.results.store import Store, validated
from visionbench.settings import OUTLIER_PCT

FLEET_JSON = "fleet.json"
NODES_DIR = "nodes"
FLEET_SCHEMA_VERSION = 1
#: A node slower than the fleet median by more than this (percent) is an outlier.
NodeStatus = Literal["pending", "running", "complete", "failed", "timed-out", "interrupted"]


class FleetNode(BaseModel):
    """One Ray node of a fleet run and what became of its study."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="hostname, with the node id's start where hostnames repeat")
    node_id: str
    hostname: str
    address: str
    cpus: float = Field(description="CPUs Ray schedules on the node; the study's threads")
    resources: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict, description="as reported by the node")
    status: NodeStatus = "pending"
    reason: str | None = Field(None, description="why the node did not complete (None: it did)")
    dir: str = Field(description="the node's run directory, relative to the fleet directory")
    measurements: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float = 0.0


class FleetResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = FLEET_SCHEMA_VERSION
    tool: str = "visionbench"
    kind: Literal["fleet"] = "fleet"
    created_at: str
    finished_at: str | None = None
    status: Literal["running", "complete", "failed", "interrupted"] = "running"
    command: list[str]
    address: str = Field(description="the Ray cluster, as given to --address")
    mode: Literal["sequential", "concurrent"]
    node_timeout: float | None = None
    outlier_pct: float = OUTLIER_PCT
    driver: dict[str, Any] = Field(default_factory=dict, description="hostname and versions")
    config: dict[str, Any] = Field(default_factory=dict)
    nodes: list[FleetNode] = Field(default_factory=list)


class FleetStore(Store):
    """A fleet directory; every change rewrites fleet.json atomically."""

    def __init__(self, directory: Path, fleet: FleetResults, lock: RunLock | None = None,
                 aside: Aside | None = None) -> None:
        super().__init__(directory, fleet, lock, aside)
        self.fleet = fleet
        try:
            self._write()
        except OSError as e:
            raise VisionbenchError(f"cannot start the fleet run: {failure(e, directory)}; "
                                   "nothing measured") from e

    def _write(self) -> None:
        atomic_write_text(self.dir / FLEET_JSON, self.fleet.model_dump_json(indent=2))

    def save(self) -> None:
        try:
            self._write()
        except OSError as e:
            raise VisionbenchError(f"cannot write the fleet's record {failure(e, self.dir)}; the "
                                   "nodes' results stored before are kept in "
                                   f"{self.dir / NODES_DIR}") from e

    def node_dir(self, node: FleetNode) -> Path:
        return self.dir / node.dir

    def interrupted(self) -> None:
        """Every node still pending or running is interrupted too, in its own results."""
        for n in self.fleet.nodes:
            if n.status in ("pending", "running"):
                n.status, n.reason = "interrupted", "the fleet run was interrupted"
                self.mark(n, "interrupted")

    def mark(self, node: FleetNode, status: Literal["failed", "interrupted"]) -> str | None:
        """A node's run that stopped before finishing says so in its own results.json; the
        status the run had (None: the node sent no results)."""
        if not (self.node_dir(node) / RESULTS_JSON).exists():
            return None
        results = load(self.node_dir(node))
        before = results.status
        if before == "running":
            results.status, results.finished_at = status, now()
            atomic_write_text(self.node_dir(node) / RESULTS_JSON, results.model_dump_json(indent=2))
        return before


def is_fleet(path: Path) -> bool:
    try:
        return (path / FLEET_JSON).is_file()
    except OSError:  # a name too long: no fleet there (reading it as a run says why)
        return False


def load_fleet(directory: Path) -> FleetResults:
    path = directory / FLEET_JSON
    data = read_json(path)
    if not isinstance(data, dict) or data.get("kind") != "fleet":
        raise VisionbenchError(f"{path} is not a visionbench fleet file")
    if data.get("schema_version") != FLEET_SCHEMA_VERSION:
        raise VisionbenchError(f"{path} has fleet schema version {data.get('schema_version')!r}; "
                               f"this visionbench reads version {FLEET_SCHEMA_VERSION}")
    return validated(FleetResults, data, path, "fleet file")


def node_runs(directory: Path) -> list[Path]:
    """The run directories of a fleet's nodes that hold results, in the fleet's node order."""
    fleet = load_fleet(directory)
    return [directory / n.dir for n in fleet.nodes if (directory / n.dir / RESULTS_JSON).exists()]


Key = CellKey


@dataclass
class NodeCell:
    """One node's measurement of one key, against the fleet median. ``ratio`` > 1 is faster:
    images/s ÷ median for throughput, median p50 ÷ this p50 for latency."""

    node: str
    value: float | None
    cv: float | None = None
    ratio: float | None = None
    #: How much slower than the median, in percent: images/s below it, or p50 above it.
    slower_pct: float | None = None
    outlier: bool = False
    note: str = ""
    per_repeat: list[float] = field(default_factory=list)
    #: Peak resident memory while timing, and energy per image where the node exposes it.
    peak_mib: float | None = None
    joules_per_image: float | None = None


@dataclass
class FleetRow:
    key: Key
    batch: int | None
    median: float | None
    cells: list[NodeCell]
    #: Concurrent throughput: images/s of all nodes together (median over repeats of their sum).
    aggregate: float | None = None
    aggregate_nodes: int = 0


@dataclass
class FleetSummary:
    dir: Path
    fleet: FleetResults
    runs: dict[str, Results]
    rows: list[FleetRow]
    outlier_pct: float

    @property
    def outliers(self) -> list[str]:
        """Each outlier in words."""
        out = []
        for row in self.rows:
            for c in row.cells:
                if c.outlier:
                    what = "images/s" if row.key.mode == "throughput" else "batch-1 p50"
                    out.append(f"{c.node}: {row.key.series()} {row.key.precision} {row.key.mode} "
                               f"{c.slower_pct:.1f}% slower than the fleet median ({what}; repeats vary "
                               f"{100 * (c.cv or 0):.1f}%)")
        return out


def _value(m: Measurement) -> float | None:
    if m.status != "ok":
        return None
    return m.throughput_ips if m.mode == "throughput" else (m.latency.p50_ms if m.latency else None)


def _aggregate(cells: list[NodeCell]) -> float | None:
    """Median over repeats of the nodes' summed images/s (they timed the same windows)."""
    runs = [c.per_repeat for c in cells if c.per_repeat]
    if not runs:
        return None
    repeats = min(len(r) for r in runs)
    return statistics.median(sum(r[i] for r in runs) for i in range(repeats))


def summarise(directory: Path, outlier_pct: float | None = None) -> FleetSummary:
    """Every node's measurement of every key beside the fleet median; outliers flagged."""
    fleet = load_fleet(directory)
    pct = fleet.outlier_pct if outlier_pct is None else outlier_pct
    if not 0 < pct < 100:
        raise VisionbenchError(f"--outlier-pct must be between 0 and 100, got {pct:g}")
    runs = {n.name: load(directory / n.dir) for n in fleet.nodes
            if (directory / n.dir / RESULTS_JSON).exists()}
    keys: list[Key] = []
    for r in runs.values():
        keys += [k for m in r.measurements if (k := r.key(m)) not in keys]
    rows = []
    for key in keys:
        cells: list[NodeCell] = []
        batch = None
        for name, r in runs.items():
            m = next((m for m in r.measurements if r.key(m) == key), None)
            if m is None:
                continue
            batch = batch or m.batch_size
            value = _value(m)
            note = "" if value is not None else f"{m.status}: {m.reason}"
            cells.append(NodeCell(name, value, m.cv, note=note,
                                  per_repeat=list(m.throughput_per_repeat) if value else [],
                                  peak_mib=m.memory.peak_mib if m.memory else None,
                                  joules_per_image=m.energy.joules_per_image if m.energy else None))
        values = [c.value for c in cells if c.value is not None]
        median = statistics.median(values) if values else None
        for c in cells:
            if c.value is None or median is None:
                continue
            if key.mode == "throughput":
                c.ratio, c.slower_pct = c.value / median, 100 * (1 - c.value / median)
            else:
                c.ratio, c.slower_pct = median / c.value, 100 * (c.value / median - 1)
            if len(values) > 1 and c.slower_pct > pct:
                c.outlier = True
                if c.cv is not None and c.slower_pct <= 100 * c.cv:
                    c.note = (f"beyond {pct:g}%, but within its repeats' spread "
                              f"({100 * c.cv:.1f}%): measure again before acting")
        row = FleetRow(key, batch, median, cells)
        if fleet.mode == "concurrent" and key.mode == "throughput":
            row.aggregate = _aggregate(cells)
            row.aggregate_nodes = sum(1 for c in cells if c.per_repeat)
        rows.append(row)
    return FleetSummary(directory, fleet, runs, rows, pct)
