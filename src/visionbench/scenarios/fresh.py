"""Scenarios with one record per engine and precision, each measured in fresh processes of its
own (``--mode cold``, ``--mode profile``): their tasks and keys, and the fresh process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from visionbench.config import RunConfig
from visionbench.data.images import Dataset
from visionbench.engines import Precision
from visionbench.errors import VisionbenchError
from visionbench.launch.process import Child, Launch
from visionbench.launch.protocol import Failed, Result
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import now
from visionbench.results.schema import EngineRecord
from visionbench.scenarios.plan import plan_tasks
from visionbench.scenarios.scenario import Scenario, Setup, Task

E = TypeVar("E", bound=EngineRecord)


@dataclass
class EngineJob:
    """What a fresh process measures: an engine and precision on the run's model."""

    cfg: RunConfig
    model: ModelSpec
    dataset: Dataset | None
    engine: str
    precision: Precision


class PerEngine(Scenario[E], Generic[E]):
    """One record per engine x precision (and workload in a suite), planned from the run's
    batch-1 latency tasks of the reference method."""

    #: The record type, and its key from (engine, precision, workload).
    record: ClassVar[type[EngineRecord]]
    record_key: ClassVar[Callable[[str, str, str | None], str]]

    def __init__(self, in_suite: bool = False) -> None:
        self.in_suite = in_suite

    def tasks(self, setup: Setup, reporter: Reporter) -> Sequence[Task]:
        return plan_tasks(setup.cfg.replace(modes=["latency"], methods=["reference"]),
                          setup.engines, setup.model, self.in_suite)

    def key(self, task: Task) -> str:
        return type(self).record_key(task.engine, task.precision,
                                     task.model if self.in_suite else None)

    def describe(self, task: Task) -> str:
        return self.key(task)

    def keys(self, cfg: RunConfig, tasks: list[Task]) -> list[str]:
        return list(dict.fromkeys(self.key(t) for t in tasks if t.mode == "latency"
                                  and t.method == "reference"))

    def add(self, setup: Setup, record: E, reporter: Reporter) -> None:
        setup.store.add(record)
        reporter.note(f"{record.key}: " + (self.summary(record) if record.status == "ok"  # type: ignore[attr-defined]
                                           else f"{record.status}: {record.reason}"))

    def summary(self, record: E) -> str:
        """A measured record in a line, for the console."""
        raise NotImplementedError

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> E:
        t = now()
        return self.record(engine=task.engine, precision=task.precision,  # type: ignore[return-value]
                           model=task.model if self.in_suite else None, status=status,
                           reason=reason, started_at=t, finished_at=t)


def in_fresh_process(target: str, job: Any, engine: str, timeout: float | None,
                     env: dict[str, str] | None = None) -> Any:
    """What ``target`` (``module:function(conn, job)``) sends back from a fresh process; its
    failure as one line. ``timeout``: seconds to wait (None: until it ends)."""
    child = Child(target, job, Launch(f"a fresh {engine} process", env=env or {}))
    finished = False
    try:
        msg = child.recv(timeout)
        finished = True
    finally:
        child.close(finished)
    if isinstance(msg, Failed):
        raise VisionbenchError(msg.error)
    if not isinstance(msg, Result):
        raise VisionbenchError(f"a fresh {engine} process ended without answering")
    return msg.value
