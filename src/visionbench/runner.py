"""A run: check every input up front, then measure each engine x precision x mode and store each
measurement the moment it completes."""

from __future__ import annotations

import resource
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from visionbench import __version__
from visionbench.config import RunConfig
from visionbench.data.synthetic import input_pool, synthetic_calibration
from visionbench.engines import Engine, Precision, Support, all_engines, get_engine
from visionbench.errors import VisionbenchError, describe
from visionbench.harness.stats import CV_WARN, cv, latency_summary
from visionbench.harness.timing import Mode, Progress, TimingPlan, measure
from visionbench.models import resolve
from visionbench.models.spec import ModelSpec
from visionbench.results import Measurement, ModelInfo, Results, RunStore, now
from visionbench.sysinfo import cpu_features, system_info

#: Rough working-set bytes per input byte for a CNN of ResNet-50's shape (activations, buffers).
MEMORY_FACTOR = 40
MAX_BATCH = 65536


class Reporter:
    """What a run tells its user; the console implements it, tests may ignore it."""

    def start(self, key: str, plan: TimingPlan) -> Progress | None:
        return None

    def done(self, m: Measurement) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Task:
    engine: str
    precision: Precision
    mode: Mode
    support: Support

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.precision}-{self.mode}"


def check_memory(model: ModelSpec, batch: int) -> None:
    per_image = model.channels * model.height * model.width * 4
    if batch > MAX_BATCH:
        raise VisionbenchError(f"batch size {batch} is absurd (at most {MAX_BATCH})")
    need = batch * per_image * MEMORY_FACTOR + 2 * model.path.stat().st_size
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
    for name, engine in engines.items():
        if model.format not in engine.formats:
            reason = (f"{name} runs {' and '.join(engine.formats)} models; {model.path.name} is a "
                      f"{model.format} model")
            if cfg.engines_explicit:
                raise VisionbenchError(reason)
            unsupported = Support("unsupported", reason)
            tasks.extend(Task(name, p, m, unsupported) for p in cfg.precisions for m in cfg.modes)
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
            tasks.extend(Task(name, p, m, s) for m in cfg.modes)
    return tasks


def _output_dir(path: Path) -> Path:
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


def _skipped(task: Task, cfg: RunConfig, reason: str, status: str = "unsupported") -> Measurement:
    t = now()
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        batch_size=cfg.batch_for(task.precision, task.mode), threads=cfg.threads,
        status=status, support=task.support.status, reason=reason, started_at=t, finished_at=t,
    )


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


def measure_task(
    task: Task, engine: Engine, model: ModelSpec, cfg: RunConfig, store: RunStore,
    reporter: Reporter,
) -> Measurement:
    plan = cfg.plan(task.precision, task.mode)
    started = now()
    emulated = task.support.status == "emulated"
    session = engine.prepare(
        model, task.precision, cfg.threads, synthetic_calibration(model, cfg.n_calibration),
        plan.batch_size, allow_emulated=cfg.allow_emulated,
    )
    try:
        pool = input_pool(model, plan.batch_size, seed=cfg.seed + plan.batch_size)
        inputs = [session.feed(x) for x in pool]
        timing = measure(session.run, inputs, plan, reporter.start(task.id, plan))
    finally:
        session.close()
    ex = session.execution
    per_repeat = [w.throughput for w in timing.windows]
    spread = cv(per_repeat)
    pooled = np.concatenate([w.latencies_ns for w in timing.windows])
    warnings: list[str] = []
    if ex.executed_precision != task.precision:
        warnings.append(f"asked for {task.precision}, {task.engine} executed "
                        f"{ex.executed_precision} ({ex.layer_precisions})")
    if task.support.reason:
        warnings.append(task.support.reason)
    if spread is not None and spread > CV_WARN:
        warnings.append(
            f"unstable: throughput varies {spread:.1%} between repeats (over {CV_WARN:.0%}); "
            "close other programs, raise --duration or --repeats"
        )
    raw = store.write_raw(task.id, [w.latencies_ns.tolist() for w in timing.windows])
    return Measurement(
        id=task.id, engine=task.engine, precision=task.precision, mode=task.mode,
        batch_size=plan.batch_size, threads=cfg.threads, status="ok",
        support=task.support.status, executed_precision=ex.executed_precision,
        emulated=emulated, layer_precisions=ex.layer_precisions, quantized_ops=ex.quantized_ops,
        engine_details=ex.details, throughput_ips=statistics.median(per_repeat),
        throughput_per_repeat=per_repeat,
        cv=spread, latency=latency_summary(pooled), raw_latencies=raw,
        repeats=plan.repeats, warmup_iterations=plan.warmup,
        warmup_seconds=timing.warmup_ns / 1e9, timed_iterations=len(pooled),
        timed_seconds=sum(w.wall_ns for w in timing.windows) / 1e9,
        prepare_seconds=ex.prepare_seconds, peak_rss_mib=_peak_rss_mib(), warnings=warnings,
        started_at=started, finished_at=now(),
    )


def run(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    """Check everything, then measure; raises VisionbenchError before measuring on bad input."""
    engines = {name: get_engine(name) for name in cfg.engines}
    model = resolve(cfg.model, cfg.seed, cfg.weights, cfg.input_name, cfg.output_name, cfg.threads)
    for p in cfg.precisions:
        for mode in cfg.modes:
            b = cfg.batch_for(p, mode)
            model.check_batch(b)
            check_memory(model, b)
    tasks = plan_tasks(cfg, engines, model)
    out = _output_dir(cfg.output)
    software = {"visionbench": __version__}
    for e in engines.values():
        software.update(e.versions())
    results = Results(
        created_at=now(), command=command, system=system_info().as_dict(), software=software,
        config=cfg.as_dict(),
        model=ModelInfo(
            name=model.name, path=str(model.path), source=model.source, sha256=model.sha256,
            input_name=model.input_name, input_layout=model.layout,
            input_shape_per_image=list(model.input_shape(1)[1:]), fixed_batch=model.fixed_batch,
            num_classes=model.num_classes, gflop_per_image=model.gflop_per_image,
            notes=list(model.notes),
        ),
        engines_not_installed={
            n: f"pip install 'visionbench[{cls.extra}]'" for n, cls in all_engines().items()
            if not cls.installed()
        },
    )
    store = RunStore(out, results)
    try:
        for task in tasks:
            if task.support.status == "unsupported":
                m = _skipped(task, cfg, task.support.reason)
                reporter.note(f"skipped {task.id}: {m.reason}")
            elif task.support.status == "emulated" and not cfg.allow_emulated:
                reason = f"{task.support.reason} (--allow-emulated measures it anyway)"
                m = _skipped(task, cfg, reason, status="skipped")
                reporter.note(f"skipped {task.id}: {m.reason}")
            else:
                try:
                    m = measure_task(task, engines[task.engine], model, cfg, store, reporter)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # an engine's failure is a result: the run goes on
                    m = _skipped(task, cfg, describe(e), status="failed")
                    reporter.note(f"failed {task.id}: {m.reason}")
            store.add(m)
            reporter.done(m)
    except KeyboardInterrupt:
        store.finish("interrupted")
        raise
    except BaseException:
        store.finish("failed")
        raise
    failed = any(m.status == "failed" for m in store.results.measurements)
    store.finish("failed" if failed else "complete")
    return store
