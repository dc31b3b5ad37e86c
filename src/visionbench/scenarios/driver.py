"""The one driver every command's scenarios run under: it opens the run (every input checked
before the run directory is claimed), measures each scenario's tasks in turn (each engine's in a
worker process of its own where the scenario is isolated), records unsupported and skipped cells,
keeps an engine's failure as a result, stores each record the moment it exists, and finishes the
run (interrupted or failed too, keeping what was measured)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from itertools import groupby
from typing import Any

from visionbench.cache import tidy
from visionbench.config import RunConfig
from visionbench.engines import all_engines, get_engine
from visionbench.errors import VisionbenchError
from visionbench.harness.peak import machine_peak
from visionbench.machine import Machine
from visionbench.models import registry
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import ModelInfo, Results, RunStore, now
from visionbench.results.policy import check_output, claim, join, recover, to_measure
from visionbench.results.schema import Invocation
from visionbench.scenarios.plan import layout_for, plan_workload
from visionbench.scenarios.scenario import Kind, R, Scenario, Setup, Task, measure_one, not_run
from visionbench.scenarios.worker import Worker, WorkerDied
from visionbench.sysinfo import numa_cores, system_info
from visionbench.version import __version__


def model_info(model: ModelSpec) -> ModelInfo:
    return ModelInfo(
        name=model.name, path=str(model.path), source=model.source, sha256=model.sha256,
        input_name=model.input_name, input_layout=model.layout,
        input_shape_per_image=list(model.input_shape(1)[1:]), fixed_batch=model.fixed_batch,
        num_classes=model.num_classes, gflop_per_image=model.gflop_per_image,
        notes=list(model.notes), preprocessing=model.preprocessing, label_offset=model.label_offset,
        task=model.task, outputs=list(model.outputs),
    )


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
    for note in recover(cfg.output):
        reporter.note(note)
    check_output(cfg.output, cfg.existing)  # refused before anything is prepared or created
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
    system = {**system_info().as_dict(), "state": Machine().state().as_dict(),
              "peak": machine_peak(reporter.note).as_dict()}
    lock, prior, aside = claim(cfg.output, cfg.existing, command)
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
            results = join(prior, cfg.existing, cfg.output, kind,
                           [(w.model.name, w.model.sha256) for w in work], system, software,
                           invocation)
        todo = None
        planned = [k for w in work for sc in scenarios for k in sc.keys(w.cfg, w.tasks)]
        invocation.planned = planned
        if prior is not None:
            todo = to_measure(prior, planned, cfg.existing, cfg.replace_records, cfg.output,
                              lambda todo: _widen(scenarios, todo, planned), reporter.note)
            invocation.resumed = sorted(todo) if cfg.existing == "resume" else []
        store = RunStore(cfg.output, results, lock, aside)
        return [Setup(w.cfg, engines, w.model, w.dataset, w.cal, w.tasks, store, todo) for w in work]
    except BaseException as e:
        lock.abandon()
        if aside is not None:
            aside.undo(e)
        raise


def _widen(scenarios: Sequence[Scenario[Any]], todo: set[str], planned: list[str]) -> set[str]:
    for sc in scenarios:
        todo = sc.widen(todo, planned)
    return todo


def _records(scenario: Scenario[R], setup: Setup, tasks: list[Task], reporter: Reporter
             ) -> Iterator[R]:
    """The records of one engine's ``tasks``, in order: measured in a worker process of that
    engine's, or one per task, where the scenario and ``--isolation`` say so, else here."""
    runnable = [t for t in tasks if not_run(t, setup.cfg) is None]
    isolation = setup.cfg.launch.isolation
    isolate = scenario.isolated and isolation != "none" and bool(runnable)
    if isolate and not registry.in_every_process(setup.model.name):
        if not setup.cfg.environment.default:
            raise VisionbenchError(f"{setup.model.name} is registered in this process only: "
                                   "--allocator, --omp-runtime and --env need a worker process")
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
            for one in setups:
                scenario.check(one)
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
    # A run joined (--append, resume) is failed while any of its records is, whoever made it,
    # and interrupted while a record any of its commands planned is missing.
    records = store.results.records()
    failed = failed or "failed" in records.values()
    missing = {k for inv in store.results.history() for k in inv.planned} - set(records)
    if missing and not failed:
        reporter.note(f"{store.dir}: {len(missing)} record(s) an earlier command planned are still "
                      f"missing ({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''}"
                      f"): the run stays interrupted; visionbench resume {store.dir} measures them")
    store.finish("failed" if failed else "interrupted" if missing else "complete")
    yield store


def run_scenarios(setup: Setup | Sequence[Setup], scenarios: Sequence[Scenario[Any]],
                  reporter: Reporter) -> RunStore:
    """``drive`` to the end."""
    *_, store = drive(setup, scenarios, reporter)
    return store
