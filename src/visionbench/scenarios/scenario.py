"""The scenario interface: a task (engine x precision x mode x method, with the engine's verdict
on this CPU), an opened run (``Setup``), a ``Scenario`` (which tasks it runs and what one task's
record is) and ``measure_one``, which turns a task into its record: measured, or unsupported,
skipped or failed with the reason."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from visionbench.cache import watch
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration
from visionbench.data.images import Dataset
from visionbench.engines import Engine, Precision, Support
from visionbench.errors import describe
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import Measurement, RunStore, now
from visionbench.settings import Mode

Kind = Literal["study", "sweep", "tune", "mlperf", "suite"]


@dataclass(frozen=True)
class Task:
    engine: str
    precision: Precision
    mode: Mode
    support: Support
    batch: int
    #: Tells apart measurements of the same engine, precision and mode (a sweep's batch sizes).
    tag: str = ""
    #: The model's name.
    model: str = ""
    #: ``config.METHODS``: the reference study's method or the engine's own configuration.
    method: str = "reference"
    #: Why the engine's own configuration for the mode is this reference task's (so the engine
    #: method is not measured apart), where it was asked for; else "".
    same: str = ""
    #: A suite's measurements are told apart by their model: its name leads the id.
    in_suite: bool = False

    @property
    def id(self) -> str:
        return ((f"{self.model}-" if self.in_suite else "") + f"{self.engine}-{self.precision}-{self.mode}"
                + ("" if self.method == "reference" else f"-{self.method}")
                + (f"-{self.tag}" if self.tag else ""))


#: A fleet's barrier, called with a task and a phase: "ready" once its session and inputs are
#: prepared (so every node warms up together), "go" after its warm-up, right before its timed
#: windows (so every node times the same wall-clock window). Returns the release time (Unix
#: seconds, by the barrier's clock), or None.
StartHook = Callable[[Task, str], "float | None"]


@dataclass
class Setup:
    """A run checked and opened: its engines, model, data, calibration, tasks and store."""

    cfg: RunConfig
    engines: dict[str, Engine]
    model: ModelSpec
    dataset: Dataset | None
    cal: Calibration
    tasks: list[Task]
    store: RunStore
    #: ``resume``: the keys of the records still to measure (the others are skipped); None: all.
    todo: set[str] | None = None


def unmeasured(task: Task, cfg: RunConfig, reason: str, status: str = "unsupported") -> Measurement:
    t = now()
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        model=task.model or None, method=task.method, engine_method=task.same or None,
        batch_size=task.batch,
        threads=cfg.launch.threads, status=status, support=task.support.status, reason=reason,
        started_at=t, finished_at=t,
    )


def not_run(task: Task, cfg: RunConfig) -> tuple[str, str] | None:
    """Why a task is not measured (status, reason), or None when it is."""
    if task.support.status == "unsupported":
        return "unsupported", task.support.reason
    if task.support.status == "emulated" and not cfg.study.allow_emulated:
        return "skipped", f"{task.support.reason} (--allow-emulated measures it anyway)"
    return None


R = TypeVar("R")


class Scenario(Generic[R]):
    """One way of measuring: which tasks it runs and what one task's record is. The driver does
    the rest. ``R`` is the record a task leaves (a Measurement, an Accuracy, a TuneOutcome...)."""

    #: Whether the driver runs each engine's tasks in a worker process of its own (``worker``)
    #: under ``--isolation engine``: the scenario then implements ``in_worker`` and ``phase``.
    isolated = False

    def in_worker(self, hook: StartHook) -> Scenario[R]:
        """The scenario as a worker process runs it (picklable), its start hook ``hook`` where it
        has one (the worker asks the parent, which calls ``phase``)."""
        raise NotImplementedError

    def phase(self, task: Task, name: str) -> float | None:
        """A worker's task reached ``name`` of its start hook: call the hook here."""
        return None

    def tasks(self, setup: Setup, reporter: Reporter) -> Sequence[Task]:
        """The tasks to run, in order (default: the run's planned tasks)."""
        return setup.tasks

    def check(self, setup: Setup) -> None:
        """Refuse the run's input (one ``VisionbenchError``) before any scenario measures."""

    def describe(self, task: Task) -> str:
        """How the console names a task in its notes."""
        return task.id

    def key(self, task: Task) -> str:
        """The key of the record ``task`` leaves (``Results.records``)."""
        return task.id

    def keys(self, cfg: RunConfig, tasks: list[Task]) -> list[str]:
        """The keys of the records this scenario plans, from the run's planned tasks."""
        return [self.key(t) for t in tasks]

    def widen(self, todo: set[str], planned: list[str]) -> set[str]:
        """``resume``: the records to measure again with ``todo`` (records made together)."""
        return todo

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> R:
        """The record of a task not measured: unsupported, skipped or failed, with the reason."""
        raise NotImplementedError

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> R:
        """Run one task; an exception is the task's failure, kept by the driver as its record."""
        raise NotImplementedError

    def add(self, setup: Setup, record: R, reporter: Reporter) -> None:
        """Store one record the moment it exists."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the scenario held for its tasks (prepared images)."""


class Skip(Exception):
    """Raised by ``Scenario.measure``: the task is skipped, with this reason."""


def measure_one(scenario: Scenario[R], task: Task, setup: Setup, reporter: Reporter) -> R:
    """One task's record: measured, or unsupported, skipped or failed with the reason (an
    engine's failure is a result: the run goes on)."""
    why = not_run(task, setup.cfg)
    if why is not None:
        reporter.note(f"skipped {scenario.describe(task)}: {why[1]}")
        return scenario.unmeasured(task, setup, *why)
    with watch() as cache:
        try:
            record = scenario.measure(task, setup, reporter)
        except KeyboardInterrupt:
            raise
        except Skip as e:
            record = scenario.unmeasured(task, setup, "skipped", str(e))
        except Exception as e:
            record = scenario.unmeasured(task, setup, "failed", describe(e))
            reporter.note(f"failed {scenario.describe(task)}: {describe(e)}")
    for note in cache.notes:  # the cache's notes that no record of the scenario's told
        reporter.note(f"{scenario.describe(task)}: {note}")
    return record
