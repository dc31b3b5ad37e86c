"""A run: check every input up front, then measure each engine x precision x mode and store each
measurement the moment it completes."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil

from visionbench import __version__
from visionbench.accuracy import (
    Prepared,
    calibration,
    mlperf_rule,
    prepare_images,
    scores,
    top5,
    write_predictions,
)
from visionbench.config import RunConfig
from visionbench.data.images import Dataset, open_dataset
from visionbench.data.preprocess import get_preprocess
from visionbench.data.synthetic import input_pool
from visionbench.engines import Engine, Precision, Support, all_engines, get_engine
from visionbench.engines.base import PARALLELISM_FLAGS, Calibration, Execution
from visionbench.errors import VisionbenchError, describe
from visionbench.harness.instances import (
    Layout,
    combined_throughput,
    custom_layout,
    pinning,
    pooled_latencies,
    reference_layout,
    run_instances,
)
from visionbench.harness.stats import CV_WARN, cv, latency_summary
from visionbench.harness.timing import Mode, Progress, Timing, TimingPlan, measure
from visionbench.models import resolve
from visionbench.models.spec import ModelSpec
from visionbench.results import (
    RESULTS_JSON,
    Accuracy,
    InstanceResult,
    Measurement,
    ModelInfo,
    Results,
    RunStore,
    load,
    now,
)
from visionbench.sysinfo import cpu_features, numa_cores, system_info

#: Rough working-set bytes per input byte for a CNN of ResNet-50's shape (activations, buffers).
MEMORY_FACTOR = 40
MAX_BATCH = 65536
#: Images per inference call when measuring accuracy (``--batch-size`` overrides).
ACCURACY_BATCH = 32


#: A fleet's barrier, called with a task and a phase: "ready" once its session and inputs are
#: prepared (so every node warms up together), "go" after its warm-up, right before its timed
#: windows (so every node times the same wall-clock window). Returns the release time (Unix
#: seconds, by the barrier's clock), or None.
StartHook = Callable[["Task", str], "float | None"]


class Reporter:
    """What a run tells its user; the console implements it, tests may ignore it."""

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

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.precision}-{self.mode}" + (f"-{self.tag}" if self.tag else "")


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
    swept = bool(cfg.batch_sizes)

    def each(name: str, p: Precision, s: Support) -> list[Task]:
        return [Task(name, p, m, s, b, f"b{b}" if swept else "")
                for m in cfg.modes for b in cfg.batches(p, m)]

    for name, engine in engines.items():
        lacks = [PARALLELISM_FLAGS[k] for k in cfg.parallelism.given() if k not in engine.parallelism]
        if model.format not in engine.formats or lacks:
            reason = (f"{name} runs {' and '.join(engine.formats)} models; {model.path.name} is a "
                      f"{model.format} model") if model.format not in engine.formats else (
                      f"{name} has no {' or '.join(lacks)}")
            if cfg.engines_explicit:
                raise VisionbenchError(reason)
            unsupported = Support("unsupported", reason)
            tasks.extend(t for p in cfg.precisions for t in each(name, p, unsupported))
            continue
        for p in cfg.precisions:
            s = engine.support(p, cpu)
            if cfg.precisions_explicit and s.status == "unsupported":
                raise VisionbenchError(f"{name} cannot run {p} here: {s.reason}")
            if cfg.precisions_explicit and s.status == "emulated" and not cfg.allow_emulated:
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
        batch_size=task.batch, threads=cfg.threads,
        status=status, support=task.support.status, reason=reason, started_at=t, finished_at=t,
    )


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


def layout_for(cfg: RunConfig, mode: Mode, nodes: list[list[int]]) -> Layout | None:
    """The instance layout of a mode, or None to run in this process, unpinned."""
    if cfg.layout is not None:
        return reference_layout(mode if cfg.layout == "reference" else cfg.layout, nodes)
    if cfg.instances is None and cfg.cores_per_instance is None:
        return None
    return custom_layout(cfg.instances, cfg.cores_per_instance, nodes)


@dataclass(frozen=True)
class InstanceJob:
    """What one pinned instance process needs to prepare and time a task by itself."""

    task: Task
    cfg: RunConfig
    model: ModelSpec
    plan: TimingPlan
    threads: int


def _prepare_and_time(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig,
                      plan: TimingPlan, threads: int, cal: Calibration,
                      progress: Progress | None, start: Callable[[], None] | None = None,
                      ready: Callable[[], None] | None = None) -> tuple[Timing, Execution]:
    session = engine.prepare(model, task.precision, threads, cal, plan.batch_size,
                             allow_emulated=cfg.allow_emulated, parallelism=cfg.parallelism)
    try:
        pool = input_pool(model, plan.batch_size, seed=cfg.seed + plan.batch_size)
        inputs = [session.feed(x) for x in pool]
        if ready is not None:
            ready()
        return measure(session.run, inputs, plan, progress, start), session.execution
    finally:
        session.close()


def instance_main(job: InstanceJob, barrier: Callable[[], None]) -> dict[str, Any]:
    """The target each instance process runs (see ``harness.instances``)."""
    cfg = job.cfg
    dataset = open_dataset(cfg.data, cfg.labels, cfg.limit) if cfg.data is not None else None
    cal, _ = study_calibration(cfg, job.model, dataset)
    timing, execution = _prepare_and_time(job.task, get_engine(job.task.engine), job.model, cfg,
                                          job.plan, job.threads, cal, None, barrier)
    return {"timing": timing, "execution": execution, "peak_rss_mib": _peak_rss_mib()}


def measure_task(
    task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, store: RunStore,
    reporter: Reporter, calibration: Calibration, start: StartHook | None = None,
) -> Measurement:
    plan = cfg.plan(task.precision, task.mode, task.batch)
    started = now()
    progress = reporter.start(task.id, plan)
    released: list[float] = []

    def phase(name: str) -> Callable[[], None]:
        def call() -> None:
            if start is not None:
                at = start(task, name)
                if name == "go":
                    released.append(time.time() if at is None else at)
        return call

    nodes = numa_cores()
    layout = layout_for(cfg, task.mode, nodes)
    instances: list[InstanceResult] = []
    extra: dict[str, Any] = {}
    if layout is None:
        threads = cfg.threads
        timing, ex = _prepare_and_time(task, engine, model, cfg, plan, threads, calibration,
                                       progress, phase("go"), phase("ready"))
        timings = [timing]
        per_repeat = [w.throughput for w in timing.windows]
        rss = _peak_rss_mib()
    else:
        threads = cfg.threads if cfg.threads_explicit else layout.cores_per_instance

        def tick(seconds: float) -> None:
            if progress and plan.duration:
                progress("window", min(int(seconds // plan.duration), plan.repeats))
                progress("timed", seconds % plan.duration)

        job = InstanceJob(task, cfg, model, plan, threads)
        phase("ready")()
        done = run_instances("visionbench.runner:instance_main", [job] * layout.instances,
                             layout, nodes, tick, phase("go"))
        timings = [d.value["timing"] for d in done]
        ex = done[0].value["execution"]
        per_repeat = combined_throughput(timings)
        rss = max(d.value["peak_rss_mib"] for d in done)
        for d, t in zip(done, timings, strict=True):
            instances.append(InstanceResult(
                index=d.index, cores=list(d.cores), affinity=d.affinity,
                throughput_ips=statistics.median(w.throughput for w in t.windows),
                throughput_per_repeat=[w.throughput for w in t.windows],
                latency=latency_summary(np.concatenate([w.latencies_ns for w in t.windows])),
            ))
        extra = {"instances": layout.instances, "cores_per_instance": layout.cores_per_instance,
                 "layout": layout.name, "layout_reason": layout.reason,
                 "pinning": pinning(nodes), "per_instance": instances}
    emulated = task.support.status == "emulated"
    spread = cv(per_repeat)
    pooled = pooled_latencies(timings)
    windows = [w for t in timings for w in t.windows]
    warnings: list[str] = []
    if ex.executed_precision != task.precision:
        warnings.append(f"asked for {task.precision}, {task.engine} executed "
                        f"{ex.executed_precision} ({ex.layer_precisions})")
    if task.support.reason:
        warnings.append(task.support.reason)
    if layout is not None:
        warnings.append(f"{layout.describe()} (instances x cores, {layout.name} layout: "
                        f"{layout.reason}); throughput is the instances' sum, latency pooled")
    if spread is not None and spread > CV_WARN:
        warnings.append(
            f"unstable: throughput varies {spread:.1%} between repeats (over {CV_WARN:.0%}); "
            "close other programs, raise --duration or --repeats"
        )
    raw = store.write_raw(task.id, [w.latencies_ns.tolist() for w in windows])
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        batch_size=plan.batch_size, threads=threads, status="ok",
        support=task.support.status, executed_precision=ex.executed_precision,
        emulated=emulated, layer_precisions=ex.layer_precisions, quantized_ops=ex.quantized_ops,
        engine_details=ex.details, throughput_ips=statistics.median(per_repeat),
        throughput_per_repeat=per_repeat,
        cv=spread, latency=latency_summary(pooled), raw_latencies=raw,
        repeats=plan.repeats, warmup_iterations=plan.warmup,
        warmup_seconds=max(t.warmup_ns for t in timings) / 1e9, timed_iterations=len(pooled),
        timed_seconds=sum(w.wall_ns for w in timings[0].windows) / 1e9,
        prepare_seconds=ex.prepare_seconds, peak_rss_mib=rss, warnings=warnings,
        released_at=released[0] if released else None,
        started_at=started, finished_at=now(), **extra,
    )


def not_run(task: Task, cfg: RunConfig) -> tuple[str, str] | None:
    """Why a task is not measured (status, reason), or None when it is."""
    if task.support.status == "unsupported":
        return "unsupported", task.support.reason
    if task.support.status == "emulated" and not cfg.allow_emulated:
        return "skipped", f"{task.support.reason} (--allow-emulated measures it anyway)"
    return None


def measure_accuracy(
    cfg: RunConfig, engines: dict[str, Engine], model: ModelSpec, dataset: Dataset,
    cal: Calibration, store: RunStore, reporter: Reporter,
) -> None:
    """Every engine x precision over the data set, FP32 first as each engine's reference."""
    precisions: list[Precision] = ["fp32", *[p for p in cfg.precisions if p != "fp32"]]
    tasks = plan_tasks(replace(cfg, modes=["latency"], precisions=precisions), engines, model)
    images = prepare_images(model, dataset)
    batch = min(cfg.batch_size or ACCURACY_BATCH, len(images.paths))
    try:
        store.results.data = {
            "root": str(dataset.root), "layout": dataset.layout, "images": len(images.paths),
            "labelled": images.labels is not None, "limit": cfg.limit,
            "unreadable": [f"{p}: {why}" for p, why in dataset.skipped],
            "preprocessing": get_preprocess(model.preprocessing).description,
            "decode_and_preprocess_seconds": round(images.seconds, 3),
        }
        if dataset.skipped:
            reporter.note(f"warning: {len(dataset.skipped)} of {len(dataset.items)} images could not be "
                          f"read and were skipped (listed in results.json under data.unreadable)")
        store.save()
        reference: dict[str, tuple[np.ndarray, float | None]] = {}
        for task in tasks:
            base = {"engine": task.engine, "precision": task.precision}
            why = not_run(task, cfg)
            if why is None and task.precision != "fp32" and task.engine not in reference:
                why = ("skipped", "no FP32 reference on this engine")
            if why is not None:
                a = Accuracy(**base, status=why[0], reason=why[1])  # type: ignore[arg-type]
            else:
                try:
                    a = _accuracy_of(task, engines[task.engine], model, cfg, images, batch, cal,
                                     reference, store)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # an engine's failure is a result
                    a = Accuracy(**base, status="failed", reason=describe(e))  # type: ignore[arg-type]
            store.add_accuracy(a)
            reporter.note(f"accuracy {task.engine} {task.precision}: " + (
                f"top-1 {a.top1:.2%}" if a.top1 is not None else (a.reason or a.status)))
    finally:
        images.close()


def _accuracy_of(task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, images: Prepared,
                 batch: int, cal: Calibration, reference: dict[str, tuple[np.ndarray, float | None]],
                 store: RunStore) -> Accuracy:
    session = engine.prepare(model, task.precision, cfg.threads, cal, batch,
                             allow_emulated=cfg.allow_emulated)
    try:
        t0 = time.perf_counter()
        outputs = []
        for i in range(0, len(images.arrays), batch):
            x = np.asarray(images.arrays[i: i + batch])
            n = len(x)
            if n < batch:  # engines compiled for a static batch: pad the last one, drop the padding
                x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
            outputs.append(session.predict(x)[:n])
        logits = np.concatenate(outputs)
        seconds = time.perf_counter() - t0
    finally:
        session.close()
    pred = top5(logits, model.label_offset)
    fp32_top1, fp32_score = reference.get(task.engine, (None, None))
    sc = scores(pred, images.labels, fp32_top1)
    if task.precision == "fp32":
        reference[task.engine] = (pred[:, 0], sc["top1"])
    ex = session.execution
    return Accuracy(
        engine=task.engine, precision=task.precision, status="ok",
        executed_precision=ex.executed_precision, emulated=task.support.status == "emulated",
        quantized_ops=ex.quantized_ops, images=len(pred), **sc,
        mlperf_99=None if task.precision == "fp32" else mlperf_rule(sc["top1"], fp32_score),
        inference_seconds=round(seconds, 3),
        predictions=write_predictions(store.dir, f"{task.engine}-{task.precision}", images.paths, pred),
    )


def study_calibration(cfg: RunConfig, model: ModelSpec,
                      dataset: Dataset | None) -> tuple[Calibration, dict[str, Any]]:
    """The run's INT8 calibration samples; the images evaluated for accuracy are kept out."""
    evaluated = {p for p, _ in dataset.items} if dataset is not None and cfg.accuracy else set()
    return calibration(model, cfg.n_calibration, cfg.calibration_data, dataset, evaluated)


@dataclass
class Setup:
    """A run checked and opened: its engines, model, data, calibration, tasks and store."""

    engines: dict[str, Engine]
    model: ModelSpec
    dataset: Dataset | None
    cal: Calibration
    tasks: list[Task]
    store: RunStore


def open_run(cfg: RunConfig, reporter: Reporter, command: list[str],
             kind: Literal["study", "sweep", "tune", "mlperf"], extend: bool = False,
             node: dict[str, Any] | None = None) -> Setup:
    """Check every input, then create the run directory; raises VisionbenchError on bad input.
    ``extend``: an existing run there of the same model is added to, not replaced. ``node``: the
    Ray node of a fleet run that this study runs on."""
    engines = {name: get_engine(name) for name in cfg.engines}
    model = resolve(cfg.model, cfg.seed, cfg.weights, cfg.input_name, cfg.output_name, cfg.threads)
    if cfg.preprocess is not None:
        model = replace(model, preprocessing=get_preprocess(cfg.preprocess).name)
    dataset = open_dataset(cfg.data, cfg.labels, cfg.limit) if cfg.data is not None else None
    if cfg.accuracy and dataset is not None and not dataset.labelled:
        reporter.note(f"note: {dataset.root} has no labels: accuracy gives agreement with FP32 only")
    cal, cal_info = study_calibration(cfg, model, dataset)
    nodes = numa_cores()
    for mode in cfg.modes:
        layout = layout_for(cfg, mode, nodes)
        if layout is not None and layout.name != "custom":
            reporter.note(f"{mode}: {layout.name} layout, {layout.describe()} "
                          f"(instances x cores): {layout.reason}")
        for b in sorted({b for p in cfg.precisions for b in cfg.batches(p, mode)}):
            model.check_batch(b)
            check_memory(model, b, layout.instances if layout else 1)
            if cfg.streams and b % cfg.streams:
                raise VisionbenchError(
                    f"--streams {cfg.streams} splits each batch evenly over the streams; the {mode} "
                    f"batch size {b} does not split" + (" (measure --mode throughput only)"
                                                        if mode == "latency" else ""))
    tasks = plan_tasks(cfg, engines, model)
    out = output_dir(cfg.output)
    software = {"visionbench": __version__}
    for e in engines.values():
        software.update(e.versions())
    results = Results(
        kind=kind, created_at=now(), command=command,
        system=system_info().as_dict(), software=software,
        config=cfg.as_dict(),
        model=ModelInfo(
            name=model.name, path=str(model.path), source=model.source, sha256=model.sha256,
            input_name=model.input_name, input_layout=model.layout,
            input_shape_per_image=list(model.input_shape(1)[1:]), fixed_batch=model.fixed_batch,
            num_classes=model.num_classes, gflop_per_image=model.gflop_per_image,
            notes=list(model.notes), preprocessing=model.preprocessing,
            label_offset=model.label_offset,
        ),
        calibration=cal_info,
        node=node,
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
    return Setup(engines, model, dataset, cal, tasks, RunStore(out, results))


def run(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    """Check everything, then measure each task, storing each measurement as it completes."""
    *_, store = run_steps(cfg, reporter, command)
    return store


def run_steps(cfg: RunConfig, reporter: Reporter, command: list[str],
              start: StartHook | None = None, node: dict[str, Any] | None = None,
              ) -> Iterator[RunStore]:
    """``run``, yielding the store each time a measurement is stored and once when finished (a
    fleet node sends its results on as they come)."""
    setup = open_run(cfg, reporter, command, "sweep" if cfg.batch_sizes else "study", node=node)
    engines, model, dataset, cal, store = (setup.engines, setup.model, setup.dataset, setup.cal,
                                           setup.store)
    with store.recording():
        for task in setup.tasks:
            why = not_run(task, cfg)
            if why is not None:
                m = unmeasured(task, cfg, why[1], status=why[0])
                reporter.note(f"skipped {task.id}: {m.reason}")
            else:
                try:
                    m = measure_task(task, engines[task.engine], model, cfg, store, reporter, cal,
                                     start)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # an engine's failure is a result: the run goes on
                    m = unmeasured(task, cfg, describe(e), status="failed")
                    reporter.note(f"failed {task.id}: {m.reason}")
            store.add(m)
            reporter.done(m)
            yield store
        if cfg.accuracy and dataset is not None:
            measure_accuracy(cfg, engines, model, dataset, cal, store, reporter)
    failed = any(m.status == "failed" for m in [*store.results.measurements, *store.results.accuracy])
    store.finish("failed" if failed else "complete")
    yield store
