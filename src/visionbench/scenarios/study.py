"""The study (``visionbench run``) and the batch sweep: each engine x precision x mode timed in
this process or in pinned instances, each measurement stored the moment it completes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from visionbench.config import RunConfig
from visionbench.reporter import Reporter
from visionbench.results import Measurement, RunStore
from visionbench.scenarios.accuracy import AccuracyScenario
from visionbench.scenarios.cold import ColdScenario
from visionbench.scenarios.driver import drive, open_run
from visionbench.scenarios.fidelity import FidelityCheck
from visionbench.scenarios.measure import measure_task
from visionbench.scenarios.pipeline import PipelineScenario
from visionbench.scenarios.profile import ProfileScenario
from visionbench.scenarios.scenario import Scenario, Setup, StartHook, Task, unmeasured


class Study(Scenario[Measurement]):
    """Each planned task timed (``measure_task``), each engine's in a worker process of its own
    (each task's under ``--isolation measurement``) unless ``--isolation none``; a fleet node
    passes its barrier as ``start``."""

    isolated = True

    def __init__(self, start: StartHook | None = None, worker: bool = False) -> None:
        self.start = start
        self.worker = worker
        self.checks: dict[str, FidelityCheck] = {}

    def in_worker(self, hook: StartHook) -> Study:
        return Study(hook if self.hooked else None, worker=True)

    @property
    def hooked(self) -> bool:
        return self.start is not None or getattr(self, "_hooked", False)

    def phase(self, task: Task, name: str) -> float | None:
        return self.start(task, name) if self.start is not None else None

    def __getstate__(self) -> dict[str, Any]:
        # A worker gets its own hook and checks (``in_worker``); it only needs to know of a hook.
        return {"start": None, "_hooked": self.hooked, "worker": self.worker, "checks": {}}

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> Measurement:
        return unmeasured(task, setup.cfg, reason, status)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> Measurement:
        engine = setup.engines[task.engine]
        check = self.checks.get(setup.model.name)
        if check is None:
            check = self.checks[setup.model.name] = FidelityCheck(setup.model, setup.dataset,
                                                                  setup.cfg.study.seed)
        m = measure_task(task, engine, setup.model,
                         setup.cfg.for_method(engine, task.method, task.mode, task.precision),
                         setup.store, reporter, setup.cal, self.start, check)
        m.ran_in = ("the main process" if not self.worker
                    else "a worker process of its own" if setup.cfg.launch.isolation == "measurement"
                    else f"the {task.engine} worker process")
        return m

    def add(self, setup: Setup, record: Measurement, reporter: Reporter) -> None:
        setup.store.add(record)
        reporter.done(record)


def run(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    """Check everything, then measure each task, storing each measurement as it completes."""
    *_, store = run_steps(cfg, reporter, command)
    return store


def run_steps(cfg: RunConfig, reporter: Reporter, command: list[str],
              start: StartHook | None = None, node: dict[str, Any] | None = None,
              ) -> Iterator[RunStore]:
    """``run``, yielding the store each time a measurement is stored and once when finished (a
    fleet node sends its results on as they come). With ``accuracy``, accuracy follows."""
    scenarios: list[Scenario[Any]] = [Study(start)] if cfg.study.modes else []
    if cfg.study.cold:
        scenarios.append(ColdScenario())
    if cfg.study.profile:
        scenarios.append(ProfileScenario())
    if cfg.study.pipeline:
        scenarios.append(PipelineScenario())
    if cfg.study.accuracy:
        scenarios.append(AccuracyScenario())
    setup = open_run(cfg, reporter, command, "sweep" if cfg.study.batch_sizes else "study",
                     scenarios, node=node)
    yield from drive(setup, scenarios, reporter)
