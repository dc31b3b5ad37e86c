"""What every scenario shares: the tasks (engine x precision x mode, with each engine's verdict
on this CPU), opening a run (every input checked before the run directory is written), and the
one driver that measures a scenario's tasks in turn, records unsupported and skipped cells, keeps
an engine's failure as a result, stores each record the moment it exists, and finishes the run
(interrupted or failed too, keeping what was measured)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import psutil

from visionbench.cache import take_notes, tidy
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration, calibration
from visionbench.data.images import Dataset, open_dataset
from visionbench.data.preprocess import get_preprocess
from visionbench.engines import Engine, Precision, Support, all_engines, get_engine
from visionbench.errors import VisionbenchError, describe
from visionbench.harness.instances import Layout, custom_layout, reference_layout
from visionbench.harness.timing import Mode, Progress, TimingPlan
from visionbench.models import registry, resolve
from visionbench.models.spec import ModelSpec
from visionbench.results import RESULTS_JSON, Measurement, ModelInfo, Results, RunStore, load, now
from visionbench.results.rundir import Aside, RunLock, move_aside
from visionbench.results.schema import Invocation
from visionbench.sysinfo import cpu_features, numa_cores, system_info
from visionbench.version import __version__

#: Rough working-set bytes per input byte for a CNN of ResNet-50's shape (activations, buffers).
MEMORY_FACTOR = 40
MAX_BATCH = 65536
Kind = Literal["study", "sweep", "tune", "mlperf", "suite"]


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


def plan_tasks(cfg: RunConfig, engines: dict[str, Engine], model: ModelSpec,
               in_suite: bool = False) -> list[Task]:
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
            out += [Task(name, p, m, s, b, f"b{b}" if swept else "", model.name, method, same,
                         in_suite) for method in methods for b in cfg.batches(p, m)]
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
    #: ``resume``: the keys of the records still to measure (the others are skipped); None: all.
    todo: set[str] | None = None


def model_info(model: ModelSpec) -> ModelInfo:
    return ModelInfo(
        name=model.name, path=str(model.path), source=model.source, sha256=model.sha256,
        input_name=model.input_name, input_layout=model.layout,
        input_shape_per_image=list(model.input_shape(1)[1:]), fixed_batch=model.fixed_batch,
        num_classes=model.num_classes, gflop_per_image=model.gflop_per_image,
        notes=list(model.notes), preprocessing=model.preprocessing, label_offset=model.label_offset,
        task=model.task, outputs=list(model.outputs),
    )


#: What must match for measurements to join a run (``--append``, ``resume``): the machine.
MACHINE = ("cpu_model", "cpu_family_model_stepping", "isa_flags", "physical_cores", "logical_cpus")


def _summary(prior: Results) -> str:
    n = len(prior.records())
    made = prior.created_at[:16].replace("T", " ")
    return f"{prior.kind}, {n} record{'' if n == 1 else 's'}, {prior.state}, made {made}"


def check_joinable(prior: Results, models: list[ModelSpec], system: dict[str, Any],
                   out: Path) -> None:
    """Measurements join a run only of the same model files on the same machine."""
    there = {m.name: m for m in prior.models or [prior.model]}
    for model in models:
        had = there.get(model.name)
        if had is None or had.sha256 != model.sha256:
            name = prior.model.name if had is None else had.name
            sha = (prior.model if had is None else had).sha256
            raise VisionbenchError(
                f"{out} holds a run of another model ({name}, sha256 {sha[:12]}; this one: "
                f"{model.name}, {model.sha256[:12]}); give another --output")
    mine = prior.system.model_dump()
    differ = [f"{k}: {_fact(mine.get(k))} there, {_fact(system.get(k))} here"
              for k in MACHINE if mine.get(k) != system.get(k)]
    if differ:
        raise VisionbenchError(f"{out} was measured on another machine ({'; '.join(differ)}); "
                               "give another --output")


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} ISA flags"
    return str(value)


def claim(cfg: RunConfig, command: list[str], marks: Sequence[str] = (RESULTS_JSON,),
          appendable: bool = True) -> tuple[RunLock, Results | None, Aside | None]:
    """The output directory, locked for this process: with the run it already holds (append,
    resume), or empty (a new run; ``--overwrite`` moves an old one aside). ``marks``: the
    files that say a directory holds a run."""
    out = output_dir(cfg.output)
    lock = RunLock.acquire(out, command)
    try:
        if not any((out / m).exists() for m in marks):
            if cfg.existing == "resume":
                raise VisionbenchError(f"{out} holds no run to resume (no {RESULTS_JSON})")
            return lock, None, None
        if cfg.existing in ("append", "resume"):
            return lock, load(out), None
        if cfg.existing == "refuse":
            what = f" ({_summary(load(out))})" if (out / RESULTS_JSON).exists() else ""
            raise VisionbenchError(
                f"{out} already holds a run{what}; give another --output, "
                + ("--append to add to it, " if appendable else "")
                + "or --overwrite to replace it")
        aside = move_aside(out)
        try:
            fresh = RunLock.acquire(output_dir(out), command)
        except BaseException:
            aside.restore()
            raise
        lock.release()
        return fresh, None, aside
    except BaseException:
        lock.release()
        raise


@dataclass
class Workload:
    """One model of a run, checked and planned: the model, its calibration, its tasks."""

    cfg: RunConfig
    model: ModelSpec
    dataset: Dataset | None
    cal: Calibration
    cal_info: dict[str, Any]
    tasks: list[Task]


def plan_workload(cfg: RunConfig, engines: dict[str, Engine], reporter: Reporter,
                  in_suite: bool = False) -> Workload:
    """``cfg``'s model resolved (built on first use), its data, calibration and batch sizes
    checked, its tasks planned; raises VisionbenchError on bad input."""
    st = cfg.study
    model = resolve(st.model, st.seed, st.weights, st.input_name, st.output_name, cfg.launch.threads,
                    st.input_shape, st.task)
    for note in take_notes():  # the model file was rebuilt
        reporter.note(f"note: {note}")
        model = replace(model, notes=(*model.notes, note))
    if cfg.inputs.preprocess is not None:
        model = replace(model, preprocessing=get_preprocess(cfg.inputs.preprocess).name)
    if cfg.study.accuracy and model.task != "classification":
        raise VisionbenchError(f"accuracy on --data measures image classifiers; {model.name} is a "
                               f"{model.task} model")
    dataset = open_data(cfg)
    if cfg.study.accuracy and dataset is not None and not dataset.labelled:
        reporter.note(f"note: {dataset.root} has no labels: accuracy gives agreement with FP32 only")
    cal, cal_info = study_calibration(cfg, model, dataset)
    nodes = numa_cores()
    for mode in cfg.study.modes:
        layout = layout_for(cfg, mode, nodes)
        if layout is not None and layout.name != "custom" and not in_suite:
            reporter.note(f"{mode}: {layout.name} layout, {layout.describe()} "
                          f"(instances x cores): {layout.reason}")
        for b in sorted({b for p in cfg.study.precisions for b in cfg.batches(p, mode)}):
            model.check_batch(b)
            check_memory(model, b, layout.instances if layout else 1)
            for engine in engines.values():
                if problem := engine.batch_problem(cfg.options_for(engine), b):
                    raise VisionbenchError(f"{problem} ({mode})" + (
                        "; measure --mode throughput only" if mode == "latency" else ""))
    return Workload(cfg, model, dataset, cal, cal_info, plan_tasks(cfg, engines, model, in_suite))


def open_run(cfg: RunConfig, reporter: Reporter, command: list[str], kind: Kind,
             scenarios: Sequence[Scenario[Any]], node: dict[str, Any] | None = None) -> Setup:
    """Check every input, then claim the run directory (``claim``); raises VisionbenchError on
    bad input. ``scenarios`` say which records the run plans (a run joined with ``--append``
    must not hold them unless ``--replace``; ``resume`` measures those missing or failed).
    ``node``: the Ray node of a fleet run that this study runs on."""
    return open_runs(cfg, [cfg], reporter, command, kind, scenarios, node)[0]


def open_runs(cfg: RunConfig, parts: Sequence[RunConfig], reporter: Reporter, command: list[str],
              kind: Kind, scenarios: Sequence[Scenario[Any]], node: dict[str, Any] | None = None,
              ) -> list[Setup]:
    """``open_run`` for a run of one model per config of ``parts`` (a suite: several), every one
    checked and planned before the directory is claimed; one Setup per part, sharing the store."""
    if cfg.existing == "refuse" and (cfg.output / RESULTS_JSON).exists():
        claim(cfg, command)  # refuses, naming the run there, before anything is prepared
    engines = {name: get_engine(name) for name in cfg.study.engines}
    tidy()
    suite = kind == "suite"
    work = [plan_workload(part, engines, reporter, suite) for part in parts]
    if suite:
        for mode in cfg.study.modes:
            layout = layout_for(cfg, mode, numa_cores())
            if layout is not None and layout.name != "custom":
                reporter.note(f"{mode}: {layout.name} layout, {layout.describe()} "
                              f"(instances x cores): {layout.reason}")
    system = system_info().as_dict()
    lock, prior, aside = claim(cfg, command)
    try:
        software = {"visionbench": __version__}
        for e in engines.values():
            software.update(e.versions())
        invocation = Invocation(
            how="resume" if cfg.existing == "resume" else "append" if prior is not None
            else "overwrite" if aside is not None else "new",
            kind=kind, command=command, config=cfg.as_dict(), started_at=now())  # type: ignore[arg-type]
        infos = [model_info(w.model) for w in work]
        if prior is None:
            results = Results(
                kind=kind, created_at=now(), command=command, system=system, software=software,
                config=cfg.as_dict(), model=infos[0], models=infos if suite else [],
                calibration=work[0].cal_info, node=node,
                engines_not_installed={
                    n: f"pip install 'visionbench[{cls.extra}]'" for n, cls in all_engines().items()
                    if not cls.installed()
                },
                invocations=[invocation],
            )
        else:
            results = join(prior, cfg, kind, [w.model for w in work], system, software, invocation)
        todo = None
        if prior is not None:
            planned = [k for w in work for sc in scenarios for k in sc.keys(w.cfg, w.tasks)]
            todo = to_measure(cfg, prior, planned, scenarios, reporter)
            invocation.resumed = sorted(todo) if cfg.existing == "resume" else []
        store = RunStore(cfg.output, results, lock, aside)
        return [Setup(w.cfg, engines, w.model, w.dataset, w.cal, w.tasks, store, todo) for w in work]
    except BaseException:
        lock.release()
        if aside is not None:
            aside.restore()
        raise


def to_measure(cfg: RunConfig, prior: Results, planned: list[str],
               scenarios: Sequence[Scenario[Any]], reporter: Reporter) -> set[str] | None:
    """Which planned records to measure in a run that holds some: with ``--append``, all (none
    may be there already unless ``--replace``: None); with ``resume``, those missing or failed."""
    records = prior.records()
    if cfg.existing == "append":
        clash = [k for k in planned if k in records]
        if clash and not cfg.replace_records:
            raise VisionbenchError(
                f"{cfg.output} already holds {_few(clash)}; --replace measures them again in "
                "its place, or give another --output")
        return None
    missing = [k for k in planned if k not in records]
    failed = [k for k in planned if records.get(k) == "failed"]
    todo = set(missing + failed)
    for sc in scenarios:
        todo = sc.widen(todo, planned)
    if not todo:
        reporter.note(f"nothing to resume in {cfg.output}: all {len(planned)} planned records "
                      "are there")
    else:
        reporter.note(f"resuming {cfg.output}: {len(todo)} of {len(planned)} planned records to "
                      "measure" + (f"; missing: {_few(missing)}" if missing else "")
                      + (f"; failed: {_few(failed)}" if failed else ""))
    return todo


def _few(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def join(prior: Results, cfg: RunConfig, kind: Kind, models: list[ModelSpec],
         system: dict[str, Any], software: dict[str, str], invocation: Invocation) -> Results:
    """The run ``prior`` with this invocation joining it (``--append``, ``resume``)."""
    check_joinable(prior, models, system, cfg.output)
    if kind != prior.kind and kind != "mlperf":
        raise VisionbenchError(f"{cfg.output} holds a {prior.kind} run; a {kind} cannot join it: "
                               "give another --output")
    changed = {k: f"{prior.software[k]} there, {v} here" for k, v in software.items()
               if k in prior.software and prior.software[k] != v}
    if changed:
        raise VisionbenchError(f"{cfg.output} was measured with other software versions ("
                               + "; ".join(f"{k}: {v}" for k, v in changed.items())
                               + "); give another --output")
    prior.software.update(software)
    prior.invocations = [*prior.history(), invocation]
    prior.status, prior.finished_at = "running", None
    if cfg.existing == "append":
        prior.command = [*prior.command, "+", *invocation.command]
    return prior


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
        record = scenario.unmeasured(task, setup, *why)
        reporter.note(f"skipped {scenario.describe(task)}: {why[1]}")
    else:
        try:
            record = scenario.measure(task, setup, reporter)
        except KeyboardInterrupt:
            raise
        except Skip as e:
            record = scenario.unmeasured(task, setup, "skipped", str(e))
        except Exception as e:
            record = scenario.unmeasured(task, setup, "failed", describe(e))
            reporter.note(f"failed {scenario.describe(task)}: {describe(e)}")
    for note in take_notes():  # a record without warnings of its own
        reporter.note(f"{scenario.describe(task)}: {note}")
    return record


def _records(scenario: Scenario[R], setup: Setup, tasks: list[Task], reporter: Reporter
             ) -> Iterator[R]:
    """The records of one engine's ``tasks``, in order: measured in a worker process of that
    engine's, or one per task, where the scenario and ``--isolation`` say so, else here."""
    runnable = [t for t in tasks if not_run(t, setup.cfg) is None]
    isolation = setup.cfg.launch.isolation
    isolate = scenario.isolated and isolation != "none" and bool(runnable)
    if isolate and not registry.in_every_process(setup.model.name):
        reporter.note(f"{setup.model.name} is registered in this process only: {tasks[0].engine} "
                      "measures it in the main process, not in a worker of its own")
        isolate = False
    if not isolate:
        for task in tasks:
            yield measure_one(scenario, task, setup, reporter)
    elif isolation == "measurement":
        for task in tasks:
            if task in runnable:
                yield from _in_worker(scenario, setup, [task], reporter)
            else:
                yield measure_one(scenario, task, setup, reporter)
    else:
        with closing(_in_worker(scenario, setup, runnable, reporter)) as made:
            for task in tasks:
                yield next(made) if task in runnable else measure_one(scenario, task, setup, reporter)
            next(made, None)  # the worker ends


def _in_worker(scenario: Scenario[R], setup: Setup, tasks: list[Task], reporter: Reporter
               ) -> Iterator[R]:
    """The records of ``tasks`` (one engine's, each runnable) measured in one worker process, in
    order. A worker that dies fails the task it was measuring and those after it, with why."""
    from visionbench.scenarios.worker import Worker, WorkerDied

    worker = Worker(scenario, setup, tasks[0].engine, tasks, reporter)
    finished = False
    try:
        made = worker.records()
        died: str | None = None
        for task in tasks:
            if died is None:
                try:
                    yield next(made)
                    continue
                except StopIteration:
                    died = f"the {task.engine} worker process ended before measuring it"
                except WorkerDied as e:
                    died = f"{e} while measuring it"
                    reporter.note(f"failed {scenario.describe(task)}: {died}")
                    yield scenario.unmeasured(task, setup, "failed", died)
                    died = f"not measured: {e} during {scenario.describe(task)}"
                    continue
            yield scenario.unmeasured(task, setup, "failed", died)
        finished = True
        next(made, None)  # the worker's "done"
    finally:
        worker.close(finished)


def drive(setup: Setup | Sequence[Setup], scenarios: Sequence[Scenario[Any]], reporter: Reporter
          ) -> Iterator[RunStore]:
    """Run each scenario's tasks in turn on an opened run (a suite: on each of its workloads'
    setups), each engine's in a worker process of its own where the scenario is isolated
    (``worker``), storing each record as it comes (yielding the store after each) and finishing
    the run: complete, or failed when any record failed; interrupted (Ctrl-C) or failed (an error
    of visionbench itself) keep what was stored."""
    setups = [setup] if isinstance(setup, Setup) else list(setup)
    store = setups[0].store
    failed = False
    with store.recording():
        for scenario in scenarios:
            try:
                for one in setups:
                    tasks = [t for t in scenario.tasks(one, reporter)
                             if one.todo is None or scenario.key(t) in one.todo]
                    for _, group in groupby(tasks, key=lambda t: t.engine):
                        for record in _records(scenario, one, list(group), reporter):
                            failed = failed or record.status == "failed"
                            if one.cfg.existing == "resume" and hasattr(record, "resumed"):
                                record.resumed = True
                            scenario.add(one, record, reporter)
                            yield store
            finally:
                scenario.close()
    # A run joined (--append, resume) is failed while any of its records is, whoever made it.
    failed = failed or "failed" in store.results.records().values()
    store.finish("failed" if failed else "complete")
    yield store


def run_scenarios(setup: Setup | Sequence[Setup], scenarios: Sequence[Scenario[Any]],
                  reporter: Reporter) -> RunStore:
    """``drive`` to the end."""
    *_, store = drive(setup, scenarios, reporter)
    return store
