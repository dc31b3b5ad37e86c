"""Each engine's measurements in a worker process of its own (``--isolation engine``, the
default), so that no engine measures beside another's runtime, thread pools and allocator, and no
measurement inherits an earlier engine's memory; or each measurement in one of its own
(``--isolation measurement``), so that none inherits what an earlier one of its engine left. The
parent stays the only writer of the run directory: the worker sends each record (and its raw
latencies, its progress, its notes) over a pipe and the parent stores it as it comes. A worker
that dies (a crash, a signal) fails only its own remaining measurements, each with the signal;
Ctrl-C stops the worker and keeps what was stored."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from visionbench.config import RunConfig
from visionbench.data.images import Dataset
from visionbench.engines import get_engine
from visionbench.errors import describe
from visionbench.harness.timing import TimingPlan
from visionbench.models.spec import ModelSpec
from visionbench.results.store import RAW_DIR
from visionbench.scenarios.base import Reporter, Scenario, Setup, Task, measure_one, study_calibration

#: Seconds a worker is given to end by itself once its pipe is closed, before it is killed.
GRACE = 5.0


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
        self.conn.send(("start", key, plan))
        return lambda phase, value: self.conn.send(("progress", key, phase, value))

    def note(self, text: str) -> None:
        self.conn.send(("note", text))

    def write_raw(self, measurement_id: str, windows: list[list[int]]) -> str:
        self.conn.send(("raw", measurement_id, windows))
        return f"{RAW_DIR}/{measurement_id}.json"

    def hook(self, task: Task, phase: str) -> float | None:
        """A fleet's barrier, passed by the parent (``base.StartHook``)."""
        self.conn.send(("phase", task, phase))
        return self.conn.recv()


def main(conn: Connection, job: Job) -> None:
    """The worker: measure each task in turn, sending each record the moment it exists."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the worker
    remote = _Remote(conn)
    try:
        cal, _ = study_calibration(job.cfg, job.model, job.dataset)
        setup = Setup(job.cfg, {job.engine: get_engine(job.engine)}, job.model, job.dataset, cal,
                      job.tasks, remote)  # type: ignore[arg-type]
        scenario = job.scenario.in_worker(remote.hook)
        for task in job.tasks:
            conn.send(("record", measure_one(scenario, task, setup, remote)))
    except Exception as e:  # of visionbench's own, outside any one measurement: said once
        conn.send(("error", describe(e)))
    else:
        conn.send(("done",))
    conn.close()


class WorkerDied(Exception):
    pass


class Worker:
    """One engine's tasks measured in a fresh process; ``records`` yields their records in order."""

    def __init__(self, scenario: Scenario[Any], setup: Setup, engine: str, tasks: list[Task],
                 reporter: Reporter) -> None:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited
        self.conn, child = ctx.Pipe()
        job = Job(setup.cfg, setup.model, setup.dataset, engine, tasks, scenario)
        self.engine = engine
        self.scenario, self.setup, self.reporter = scenario, setup, reporter
        self.proc = ctx.Process(target=main, args=(child, job), name=f"visionbench-{engine}")
        self.proc.start()
        child.close()

    def records(self) -> Iterator[Any]:
        """Each record as the worker sends it; raises WorkerDied, with why, if it ends before."""
        progress: dict[str, Callable[[str, float], None] | None] = {}
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                raise WorkerDied(self.why()) from None
            kind = msg[0]
            if kind == "record":
                yield msg[1]
            elif kind == "done":
                return
            elif kind == "error":
                raise WorkerDied(f"the {self.engine} worker process failed: {msg[1]}")
            elif kind == "start":
                progress[msg[1]] = self.reporter.start(msg[1], msg[2])
            elif kind == "progress":
                if call := progress.get(msg[1]):
                    call(msg[2], msg[3])
            elif kind == "note":
                self.reporter.note(msg[1])
            elif kind == "raw":
                self.setup.store.write_raw(msg[1], msg[2])
            elif kind == "phase":
                self.conn.send(self.scenario.phase(msg[1], msg[2]))

    def why(self) -> str:
        self.proc.join(GRACE)
        code = self.proc.exitcode
        if code is None:
            return f"the {self.engine} worker process stopped answering"
        if code < 0:
            return f"the {self.engine} worker process was killed by {signal.Signals(-code).name}"
        return f"the {self.engine} worker process exited with status {code}"

    def close(self, finished: bool) -> None:
        """Wait for a worker that has sent everything to end; stop one that has not (Ctrl-C, an
        error of the parent's)."""
        self.conn.close()
        if not finished and self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(GRACE)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
