"""``--mode profile``: where the batch-1 time goes. Each engine and precision runs in a fresh
process of its own: first ``calls`` unprofiled synchronous calls at batch 1 (their median is the
latency the profile explains), then the same calls on a session prepared with the engine's own
profiler on (OpenVINO's performance counters, ONNX Runtime's session profiling, torch.profiler,
TensorFlow's profiler), never mixed with timed ones. The record holds every executed operation
(type, kernel, precision, time per call), the sums per type and precision, how much of the
profiled call they account for (and the gap's measured parts), and the profiler's files (a
trace, an executed graph), which the store writes into the run directory."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from visionbench.data.synthetic import input_pool
from visionbench.engines import get_engine
from visionbench.engines.base import OpProfile, OpTime
from visionbench.harness.pipeline import inference_only
from visionbench.launch.protocol import Result
from visionbench.models.flops import is_compute, op_group
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import now
from visionbench.results.schema import OpRow, ProfileRun, profile_key
from visionbench.scenarios.fresh import EngineJob, PerEngine, in_fresh_process
from visionbench.scenarios.plan import study_calibration
from visionbench.scenarios.scenario import Setup, Task

#: Calls profiled (and timed unprofiled before) per engine and precision (``--iterations``
#: overrides; ``--quick``: ``QUICK_CALLS``), after ``WARMUP`` untimed ones (``--warmup``).
CALLS = 100
QUICK_CALLS = 10
WARMUP = 5
#: Seconds one process may take (INT8 quantization included).
TIMEOUT = 1800.0
#: The operations' sum within this share of the profiled call: OpenVINO and ONNX Runtime time
#: every operation of a synchronous call, so a larger gap means time the profile cannot place.
CONSISTENT = 0.10


@dataclass
class Job(EngineJob):
    calls: int
    warmup: int


def profile_one(conn: Connection, job: Job) -> None:
    """The fresh process (``launch.child``'s target): unprofiled calls, then profiled ones."""
    engine = get_engine(job.engine)
    cal, _ = study_calibration(job.cfg, job.model, job.dataset)
    spec = job.cfg.spec(engine, job.model, job.precision, 1, cal)
    x = input_pool(job.model, 1, seed=job.cfg.study.seed, pool=1)[0]
    session = engine.prepare(spec)
    try:
        fed = session.feed(x)
        for _ in range(job.warmup):
            session.run(fed)
        times = inference_only(session.run, fed, job.calls)
    finally:
        session.close()
    profiled = engine.prepare(dataclasses.replace(spec, profiling=True))
    try:
        prof = profiled.profile(profiled.feed(x), job.calls, job.warmup)
    except NotImplementedError as e:
        prof = e
    finally:
        profiled.close()
    conn.send(Result({"p50_ms": statistics.median(times), "profile": prof}))


def _compute(prof: OpProfile, model: ModelSpec) -> tuple[float | None, float | None, str]:
    """The convolutions and matrix products' time and FLOPs per call, and where the FLOPs come
    from: each operation's own where the engine gives them all, else the model's count over
    every operation of those types (an engine that names no shapes, or not every one's), else
    none."""
    compute = [op for op in prof.ops if is_compute(op.op_type)]
    if compute and all(op.flops for op in compute):
        return (sum(op.ms for op in compute), sum(op.flops or 0.0 for op in compute),
                prof.flops_from)
    if compute and model.gflop_per_image:
        return (sum(op.ms for op in compute), model.gflop_per_image * 1e9,
                "the model's graph, per operation type (the profiler gives not every "
                "operation's shapes)")
    return None, None, ""


def _record(task: Task, in_suite: bool, p50: float, prof: OpProfile, files: list[str],
            started: str, model: ModelSpec) -> ProfileRun:
    ops_ms = sum(op.ms for op in prof.ops)
    ops = sorted(prof.ops, key=lambda op: op.ms, reverse=True)

    def summed(key: Callable[[OpTime], str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for op in ops:
            out[key(op)] = out.get(key(op), 0.0) + op.ms
        return dict(sorted(out.items(), key=lambda kv: kv[1], reverse=True))

    call = statistics.median(prof.call_ms)
    if prof.ops_per_call_ms is not None:
        # Each call's operations against that call: a sum of per-operation medians is no one
        # call's, and on a model of a few dozen microsecond operations the two part by more
        # than the 10% this checks.
        ratios = [s / t for s, t in zip(prof.ops_per_call_ms, prof.call_ms, strict=True) if t > 0]
        coverage = statistics.median(ratios) if ratios else None
        how = f"median over {len(ratios)} calls of each one's operations summed over its latency"
    else:  # the operations' means: against the calls' mean
        mean = statistics.fmean(prof.call_ms)
        coverage = ops_ms / mean if mean > 0 else None
        how = f"the operations' means summed over the {len(prof.call_ms)} calls' mean latency"
    notes = []
    # Each operation's time may be off by the profiler's resolution (whole microseconds: on a
    # model of a few dozen operations of a few microseconds each, a share of its own).
    slack = len(ops) * prof.resolution_ms / call if call > 0 else 0.0
    consistent = None if coverage is None else abs(coverage - 1) <= CONSISTENT + slack
    # The gap's measured causes: what the profiler adds to a call (profiled against unprofiled
    # calls of the same process), and the time within a call no operation holds (the framework
    # between operations: Python, dispatch, a compiled graph's wrapper).
    compute_ms, compute_flops, flops_from = _compute(prof, model)
    if not flops_from:
        notes.append("FLOPs omitted: the profiler names no shapes and the model's count is not "
                     "known")
    overhead = call - p50
    unplaced = call * (1 - coverage) if coverage is not None else None
    if consistent is False and unplaced is not None:
        notes.append(f"the operations account for {coverage:.0%} of the profiled call "
                     f"({how}; {len(ops)} operations timed to {prof.resolution_ms * 1e3:.3g} µs): "
                     + (f"{unplaced:.3f} ms of each call is time the profiler places in no "
                        "operation (the engine or framework between operations, the call "
                        f"itself); the profiler itself adds {overhead:+.3f} ms to a call "
                        "(profiled p50 against unprofiled)" if coverage < 1 else
                        "more than the call: operations that overlap, or a profiler's clock "
                        "coarser than stated"))
    return ProfileRun(
        engine=task.engine, precision=task.precision, model=task.model if in_suite else None,
        status="ok", calls=len(prof.call_ms), source=prof.source, p50_ms=p50,
        profiled_p50_ms=call, ops_ms=ops_ms, coverage=coverage, consistent=consistent,
        ms_added_by_profiler=overhead, unplaced_ms=unplaced, compute_ms=compute_ms,
        compute_flops=compute_flops, flops_from=flops_from,
        ops=[OpRow(name=op.name, op_type=op.op_type, ms=op.ms,
                   share=op.ms / ops_ms if ops_ms > 0 else 0.0, precision=op.precision,
                   kernel=op.kernel, flops=op.flops, bytes=op.bytes) for op in ops],
        by_type=summed(lambda op: op.op_type), by_precision=summed(lambda op: op.precision),
        by_group=summed(lambda op: op_group(op.op_type)), files=files, notes=notes,
        started_at=started, finished_at=now())


class ProfileScenario(PerEngine[ProfileRun]):
    """Each engine x precision profiled at batch 1 in a fresh process."""

    record = ProfileRun
    record_key = staticmethod(profile_key)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> ProfileRun:
        cfg, started = setup.cfg, now()
        calls = cfg.timing.iterations or (QUICK_CALLS if cfg.timing.quick else CALLS)
        warmup = WARMUP if cfg.timing.warmup is None else cfg.timing.warmup
        step = reporter.steps(self.key(task), 1)
        if step:
            step(0, f"{calls} calls, then {calls} profiled, in a fresh process")
        job = Job(cfg, setup.model, setup.dataset, task.engine, task.precision, calls, warmup)
        value = in_fresh_process("visionbench.scenarios.profile:profile_one", job, task.engine,
                                 TIMEOUT)
        if step:
            step(1, "done")
        prof = value["profile"]
        if isinstance(prof, NotImplementedError):
            return self.unmeasured(task, setup, "unsupported", f"{task.engine}: {prof}")
        files = setup.store.write_files(f"profiles/{self.key(task)}", prof.files)
        return _record(task, self.in_suite, value["p50_ms"], prof, files, started, setup.model)

    def summary(self, record: ProfileRun) -> str:
        top = ", ".join(f"{t} {ms / (record.ops_ms or 1):.0%}"
                        for t, ms in list(record.by_type.items())[:3])
        return (f"p50 {record.p50_ms:.3f} ms unprofiled, {record.profiled_p50_ms:.3f} ms "
                f"profiled, the operations {record.coverage:.0%} of it; {top}")
