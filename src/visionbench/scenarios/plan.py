"""Which tasks a configuration asks for, checked before anything is measured: the model resolved
(built on first use), its data and calibration, every batch size against the model and memory,
and each engine's verdict on each precision on this CPU."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psutil

from visionbench.cache import watch
from visionbench.config import RunConfig
from visionbench.data.calibration import Calibration, calibration
from visionbench.data.images import Dataset, open_dataset
from visionbench.data.preprocess import get_preprocess
from visionbench.engines import Engine, Precision, Support, get_engine
from visionbench.errors import VisionbenchError
from visionbench.harness.instances import Layout, custom_layout, reference_layout
from visionbench.models import resolve
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results.policy import check_output
from visionbench.scenarios.scenario import Task
from visionbench.settings import Mode
from visionbench.sysinfo import cpu_features, numa_cores

#: Rough working-set bytes per input byte for a CNN of ResNet-50's shape (activations, buffers).
MEMORY_FACTOR = 40


MAX_BATCH = 65536


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


def plan_tasks(cfg: RunConfig, engines: dict[str, Engine], model: ModelSpec | None,
               in_suite: bool = False) -> list[Task]:
    """Every measurement to make, with each engine's verdict on each precision on this CPU.

    A precision the user named that cannot run natively is an error (unless ``allow_emulated``
    and the engine can emulate it); a default precision that cannot is recorded as skipped.
    Likewise an engine the user named that cannot run the model's format is an error; one that
    ``--engine all`` brought in is recorded as unsupported. Without ``model`` (a dry run: not
    built or read), the model's format is not checked."""
    cpu = cpu_features()
    model_name = model.name if model is not None else cfg.study.model
    tasks: list[Task] = []
    swept = bool(cfg.study.batch_sizes)

    def each(name: str, p: Precision, s: Support) -> list[Task]:
        out = []
        for m in cfg.study.modes:
            own, why = engines[name].own_method(m, p, cfg.launch.threads)
            # An engine whose own configuration is the reference's has one row standing for both.
            methods = cfg.study.methods if own is not None else ["reference"]
            same = why if own is None and "engine" in cfg.study.methods else ""
            out += [Task(name, p, m, s, b, f"b{b}" if swept else "", model_name, method, same,
                         in_suite) for method in methods for b in cfg.batches(p, m)]
        return out

    for name, engine in engines.items():
        lacks = cfg.options_lacking(engine)
        cannot = (engine.cannot_run(model) if model is not None else None) \
            or engine.environment_problem(cfg.environment)
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
    with watch() as cache:
        model = resolve(st.model, st.seed, st.weights, st.input_name, st.output_name,
                        cfg.launch.threads, st.input_shape, st.task)
    for note in cache.notes:  # the model file was rebuilt
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


@dataclass
class DryRun:
    """What ``visionbench run`` would measure and where, nothing of it done (``dry_run``)."""

    cfg: RunConfig
    #: What the run would do with its output folder.
    output_note: str
    #: Per mode, its instance layout (None: this process, unpinned).
    layouts: dict[Mode, Layout | None]
    tasks: list[Task]


def dry_run(cfg: RunConfig) -> DryRun:
    """``cfg`` planned as a run would plan it, creating, moving and measuring nothing: the output
    folder checked against its policy, each engine's verdict on each precision here, the
    instance layouts and the tasks. The model is neither built nor read, so its own checks (its
    file, the batch sizes against it and the memory they need) come when the run starts."""
    holds_run = check_output(cfg.output, cfg.existing)
    note = ("joins the run there" if holds_run and cfg.existing == "append"
            else "replaces the run there" if holds_run
            else "what it holds is moved aside" if cfg.output.is_dir() and any(cfg.output.iterdir())
            else "a new run")
    engines = {name: get_engine(name) for name in cfg.study.engines}
    nodes = numa_cores()
    layouts = {mode: layout_for(cfg, mode, nodes) for mode in cfg.study.modes}
    return DryRun(cfg, note, layouts, plan_tasks(cfg, engines, None))
