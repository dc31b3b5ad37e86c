"""What every scenario shares: the tasks (engine x precision x mode, with each engine's verdict
on this CPU), opening a run (every input checked before the run directory is written), and the
one driver that measures a scenario's tasks in turn, records unsupported and skipped cells, keeps
an engine's failure as a result, stores each record the moment it exists, and finishes the run
(interrupted or failed too, keeping what was measured)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import psutil

from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration, calibration
from visionbench.data.images import Dataset, open_dataset
from visionbench.data.preprocess import get_preprocess
from visionbench.engines import Engine, Precision, Support, all_engines, get_engine
from visionbench.errors import VisionbenchError, describe
from visionbench.harness.instances import Layout, custom_layout, reference_layout
from visionbench.harness.timing import Mode, Progress, TimingPlan
from visionbench.models import resolve
from visionbench.models.spec import ModelSpec
from visionbench.results import RESULTS_JSON, Measurement, ModelInfo, Results, RunStore, load, now
from visionbench.sysinfo import cpu_features, numa_cores, system_info
from visionbench.version import __version__

#: Rough working-set bytes per input byte for a CNN of ResNet-50's shape (activations, buffers).
MEMORY_FACTOR = 40
MAX_BATCH = 65536
Kind = Literal["study", "sweep", "tune", "mlperf"]


class Reporter:
    """What a run tells its user; the command line implements it, the API and tests may ignore it."""

    def start(self, key: str, plan: TimingPlan) -> Progress | None:
        return None

    def done(self, m: Measurement) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def steps(self, key: str, total: int) -> Callable[[int, str], None] | None:
        """A bar counting ``total`` steps of something long (a fleet node's measurements): the
        returned callable takes the steps done and a state."""
        return None


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

    @property
    def id(self) -> str:
        return (f"{self.engine}-{self.precision}-{self.mode}"
                + ("" if self.method == "reference" else f"-{self.method}")
                + (f"-{self.tag}" if self.tag else ""))


#: A fleet's barrier, called with a task and a phase: "ready" once its session and inputs are
#: prepared (so every node warms up together), "go" after its warm-up, right before its timed
#: windows (so every node times the same wall-clock window). Returns the release time (Unix
#: seconds, by the barrier's clock), or None.
StartHook = Callable[[Task, str], "float | None"]


def check_memory(model: ModelSpec, batch: int, instances: int = 1) -> None:
    per_image = model.channels * model.height * model.width * 4
    if batch > MAX_BATCH:
        raise VisionbenchError(f"batch size {batch} is absurd (at most {MAX_BATCH})")
    need = instances * (batch * per_image * MEMORY_FACTOR + 2 * model.path.stat().st_size)
    avail = psutil.virtual_memory().available
    if need > avail:
        raise VisionbenchError(
            f"batch size {batch} needs about {need / 2**30:.1f} GiB for inputs and activations; "
            f"this machine has {avail / 2**30:.1f} GiB available"
        )


def plan_tasks(cfg: RunConfig, engines: dict[str, Engine], model: ModelSpec) -> list[Task]:
    """Every measurement to make, with each engine's verdict on each precision on this CPU.

    A precision the user named that cannot run natively is an error (unless ``allow_emulated``
    and the engine can emulate it); a default precision that cannot is recorded as skipped.
    Likewise an engine the user named that cannot run the model's format is an error; one that
    ``--engine all`` brought in is recorded as unsupported."""
    cpu = cpu_features()
    tasks: list[Task] = []
    swept = bool(cfg.study.batch_sizes)

    def each(name: str, p: Precision, s: Support) -> list[Task]:
        out = []
        for m in cfg.study.modes:
            own, why = engines[name].own_method(m, p, cfg.launch.threads)
            # An engine whose own configuration is the reference's has one row standing for both.
            methods = cfg.study.methods if own is not None else ["reference"]
            same = why if own is None and "engine" in cfg.study.methods else ""
            out += [Task(name, p, m, s, b, f"b{b}" if swept else "", model.name, method, same)
                    for method in methods for b in cfg.batches(p, m)]
        return out

    for name, engine in engines.items():
        lacks = cfg.options_lacking(engine)
        cannot = engine.cannot_run(model)
        if cannot or lacks:
            reason = cannot or f"{name} has no {' or '.join(lacks)}"
            if cfg.study.engines_explicit:
                raise VisionbenchError(reason)
            unsupported = Support("unsupported", reason)
            tasks.extend(t for p in cfg.study.precisions for t in each(name, p, unsupported))
            continue
        for p in cfg.study.precisions:
            s = engine.support(p, cpu)
            if cfg.study.precisions_explicit and s.status == "unsupported":
                raise VisionbenchError(f"{name} cannot run {p} here: {s.reason}")
            if cfg.study.precisions_explicit and s.status == "emulated" and not cfg.study.allow_emulated:
                raise VisionbenchError(
                    f"{name} {p} would be emulated: {s.reason} "
                    "(--allow-emulated measures it anyway, marked emulated)"
                )
            tasks.extend(each(name, p, s))
    return tasks


def output_dir(path: Path) -> Path:
    """``path``, created and checked writable."""
    if path.exists() and not path.is_dir():
        raise VisionbenchError(f"output path exists and is not a directory: {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise VisionbenchError(f"output directory is not writable: {path} ({e.strerror})") from e
    return path


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


def layout_for(cfg: RunConfig, mode: Mode, nodes: list[list[int]]) -> Layout | None:
    """The instance layout of a mode, or None to run in this process, unpinned."""
    if cfg.launch.layout is not None:
        return reference_layout(mode if cfg.launch.layout == "reference" else cfg.launch.layout, nodes)
    if cfg.launch.instances is None and cfg.launch.cores_per_instance is None:
        return None
    return custom_layout(cfg.launch.instances, cfg.launch.cores_per_instance, nodes)


def open_data(cfg: RunConfig) -> Dataset | None:
    """The run's image set, if it has one."""
    i = cfg.inputs
    return open_dataset(i.data, i.labels, i.limit) if i.data is not None else None


def study_calibration(cfg: RunConfig, model: ModelSpec,
                      dataset: Dataset | None) -> tuple[Calibration, dict[str, Any]]:
    """The run's INT8 calibration samples; the images evaluated for accuracy are kept out."""
    evaluated = {p for p, _ in dataset.items} if dataset is not None and cfg.study.accuracy else set()
    return calibration(model, cfg.n_calibration, cfg.inputs.calibration_data, dataset, evaluated)


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


def model_info(model: ModelSpec) -> ModelInfo:
    return ModelInfo(
        name=model.name, path=str(model.path), source=model.source, sha256=model.sha256,
        input_name=model.input_name, input_layout=model.layout,
        input_shape_per_image=list(model.input_shape(1)[1:]), fixed_batch=model.fixed_batch,
        num_classes=model.num_classes, gflop_per_image=model.gflop_per_image,
        notes=list(model.notes), preprocessing=model.preprocessing, label_offset=model.label_offset,
    )


def open_run(cfg: RunConfig, reporter: Reporter, command: list[str], kind: Kind,
             extend: bool = False, node: dict[str, Any] | None = None) -> Setup:
    """Check every input, then create the run directory; raises VisionbenchError on bad input.
    ``extend``: an existing run there of the same model is added to, not replaced. ``node``: the
    Ray node of a fleet run that this study runs on."""
    engines = {name: get_engine(name) for name in cfg.study.engines}
    st = cfg.study
    model = resolve(st.model, st.seed, st.weights, st.input_name, st.output_name, cfg.launch.threads)
    if cfg.inputs.preprocess is not None:
        model = replace(model, preprocessing=get_preprocess(cfg.inputs.preprocess).name)
    dataset = open_data(cfg)
    if cfg.study.accuracy and dataset is not None and not dataset.labelled:
        reporter.note(f"note: {dataset.root} has no labels: accuracy gives agreement with FP32 only")
    cal, cal_info = study_calibration(cfg, model, dataset)
    nodes = numa_cores()
    for mode in cfg.study.modes:
        layout = layout_for(cfg, mode, nodes)
        if layout is not None and layout.name != "custom":
            reporter.note(f"{mode}: {layout.name} layout, {layout.describe()} "
                          f"(instances x cores): {layout.reason}")
        for b in sorted({b for p in cfg.study.precisions for b in cfg.batches(p, mode)}):
            model.check_batch(b)
            check_memory(model, b, layout.instances if layout else 1)
            for engine in engines.values():
                if problem := engine.batch_problem(cfg.options_for(engine), b):
                    raise VisionbenchError(f"{problem} ({mode})" + (
                        "; measure --mode throughput only" if mode == "latency" else ""))
    tasks = plan_tasks(cfg, engines, model)
    out = output_dir(cfg.output)
    software = {"visionbench": __version__}
    for e in engines.values():
        software.update(e.versions())
    results = Results(
        kind=kind, created_at=now(), command=command,
        system=system_info().as_dict(), software=software,
        config=cfg.as_dict(), model=model_info(model), calibration=cal_info, node=node,
        engines_not_installed={
            n: f"pip install 'visionbench[{cls.extra}]'" for n, cls in all_engines().items()
            if not cls.installed()
        },
    )
    if extend and (out / RESULTS_JSON).exists():
        prior = load(out)
        if prior.model.sha256 != model.sha256:
            raise VisionbenchError(f"{out} holds a run of another model ({prior.model.name}, "
                                   f"{prior.model.path}); give another --output")
        prior.status, prior.finished_at = "running", None
        prior.command = [*prior.command, "+", *command]
        results = prior
    return Setup(cfg, engines, model, dataset, cal, tasks, RunStore(out, results))


R = TypeVar("R")


class Scenario(Generic[R]):
    """One way of measuring: which tasks it runs and what one task's record is. The driver does
    the rest. ``R`` is the record a task leaves (a Measurement, an Accuracy, a TuneOutcome...)."""

    def tasks(self, setup: Setup, reporter: Reporter) -> Sequence[Task]:
        """The tasks to run, in order (default: the run's planned tasks)."""
        return setup.tasks

    def describe(self, task: Task) -> str:
        """How the console names a task in its notes."""
        return task.id

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


def drive(setup: Setup, scenarios: Sequence[Scenario[Any]], reporter: Reporter) -> Iterator[RunStore]:
    """Run each scenario's tasks in turn on an opened run, storing each record as it comes
    (yielding the store after each) and finishing the run: complete, or failed when any record
    failed; interrupted (Ctrl-C) or failed (an error of visionbench itself) keep what was stored."""
    store = setup.store
    failed = False
    with store.recording():
        for scenario in scenarios:
            try:
                for task in scenario.tasks(setup, reporter):
                    why = not_run(task, setup.cfg)
                    if why is not None:
                        record = scenario.unmeasured(task, setup, *why)
                        reporter.note(f"skipped {scenario.describe(task)}: {why[1]}")
                    else:
                        try:
                            record = scenario.measure(task, setup, reporter)
                        except KeyboardInterrupt:
                            raise
                        except Skip as e:
                            record = scenario.unmeasured(task, setup, "skipped", str(e))
                        except Exception as e:  # an engine's failure is a result: the run goes on
                            record = scenario.unmeasured(task, setup, "failed", describe(e))
                            reporter.note(f"failed {scenario.describe(task)}: {describe(e)}")
                    failed = failed or record.status == "failed"
                    scenario.add(setup, record, reporter)
                    yield store
            finally:
                scenario.close()
    store.finish("failed" if failed else "complete")
    yield store


def run_scenarios(setup: Setup, scenarios: Sequence[Scenario[Any]], reporter: Reporter) -> RunStore:
    """``drive`` to the end."""
    *_, store = drive(setup, scenarios, reporter)
    return store
