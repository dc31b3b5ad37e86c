"""Each engine's measurements in a worker process of its own (``--isolation engine``, the
default), so that no engine measures beside another's runtime, thread pools and allocator, and no
measurement inherits an earlier engine's memory; or each measurement in one of its own
(``--isolation measurement``), so that none inherits what an earlier one of its engine left. The
parent stays the only writer of the run directory: the worker sends each record (and its raw
latencies, its progress, its notes) over a pipe and the parent stores it as it comes. A worker
that dies (a crash, a signal) fails only its own remaining measurements, each with the signal;
Ctrl-C stops the worker and keeps what was stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from visionbench.config import RunConfig
from visionbench.data.images import Dataset
from visionbench.engines import get_engine
from visionbench.harness.timing import TimingPlan
from visionbench.launch.process import Child, ChildDied, Launch
from visionbench.launch.protocol import Ask, Done, Failed, Note, Progress, Raw, Reply, Result, Started
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results.store import RAW_DIR
from visionbench.scenarios.plan import study_calibration
from visionbench.scenarios.scenario import Scenario, Setup, Task, measure_one


@dataclass
class Job:
    cfg: RunConfig
    model: ModelSpec
    dataset: Dataset | None
    engine: str
    tasks: list[Task]
    scenario: Scenario[Any]


class _Remote(Reporter):
    """The worker's reporter and store: everything goes to the parent."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def start(self, key: str, plan: TimingPlan) -> Callable[[str, float], None]:
        self.conn.send(Started(key, plan))
        return lambda phase, value: self.conn.send(Progress(key, phase, value))

    def note(self, text: str) -> None:
        self.conn.send(Note(text))

    def write_raw(self, measurement_id: str, windows: list[list[int]]) -> str:
        self.conn.send(Raw(measurement_id, windows))
        return f"{RAW_DIR}/{measurement_id}.json"

    def hook(self, task: Task, phase: str) -> float | None:
        """A fleet's barrier, passed by the parent (``base.StartHook``)."""
        self.conn.send(Ask(phase, (task,)))
        reply = self.conn.recv()
        assert isinstance(reply, Reply)
        return reply.value


def main(conn: Connection, job: Job) -> None:
    """The worker (``launch.child``'s target): measure each task in turn, sending each record
    the moment it exists."""
    remote = _Remote(conn)
    cal, _ = study_calibration(job.cfg, job.model, job.dataset)
    setup = Setup(job.cfg, {job.engine: get_engine(job.engine)}, job.model, job.dataset, cal,
                  job.tasks, remote)  # type: ignore[arg-type]
    scenario = job.scenario.in_worker(remote.hook)
    for task in job.tasks:
        conn.send(Result(measure_one(scenario, task, setup, remote)))


class WorkerDied(Exception):
    pass


class Worker:
    """One engine's tasks measured in a fresh process; ``records`` yields their records in order."""

    def __init__(self, scenario: Scenario[Any], setup: Setup, engine: str, tasks: list[Task],
                 reporter: Reporter) -> None:
        self.engine = engine
        self.scenario, self.setup, self.reporter = scenario, setup, reporter
        job = Job(setup.cfg, setup.model, setup.dataset, engine, tasks, scenario)
        self.child = Child("visionbench.scenarios.worker:main", job,
                           Launch(f"the {engine} worker process",
                                  env=setup.cfg.environment.variables()))

    def records(self) -> Iterator[Any]:
        """Each record as the worker sends it; raises WorkerDied, with why, if it ends before."""
        progress: dict[str, Callable[[str, float], None] | None] = {}
        while True:
            try:
                msg = self.child.recv()
            except ChildDied as e:
                raise WorkerDied(str(e)) from None
            if isinstance(msg, Result):
                yield msg.value
            elif isinstance(msg, Done):
                return
            elif isinstance(msg, Failed):
                raise WorkerDied(f"the {self.engine} worker process failed: {msg.error}")
            elif isinstance(msg, Started):
                progress[msg.key] = self.reporter.start(msg.key, msg.plan)
            elif isinstance(msg, Progress):
                if call := progress.get(msg.key):
                    call(msg.phase, msg.value)
            elif isinstance(msg, Note):
                self.reporter.note(msg.text)
            elif isinstance(msg, Raw):
                self.setup.store.write_raw(msg.measurement_id, msg.windows)
            elif isinstance(msg, Ask):
                self.child.send(Reply(self.scenario.phase(msg.args[0], msg.what)))

    def close(self, finished: bool) -> None:
        """Wait for a worker that has sent everything to end; stop one that has not (Ctrl-C, an
        error of the parent's)."""
        self.child.close(finished)
