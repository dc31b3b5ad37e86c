"""``--mode cold``: how long until the first answer after a restart. Each engine and precision is
started in several fresh processes, one after another, each timed from its start to its first
inference's answer: the process up with visionbench imported, the engine's runtime imported, the
model read, the session prepared (read, quantize, compile), the first batch-1 inference. The OS
file cache stays warm unless ``--drop-caches`` (root only); INT8 quantization is read from
visionbench's cache unless ``--no-cache``, which re-runs it in each process."""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from visionbench.cache import events_text, watch
from visionbench.data.synthetic import input_pool
from visionbench.engines import get_engine
from visionbench.errors import VisionbenchError
from visionbench.fsutil import cache_dir
from visionbench.harness.memory import process_peak_mib
from visionbench.launch.protocol import Result
from visionbench.reporter import Reporter
from visionbench.results import now
from visionbench.results.schema import ColdStartRun, Spread, cold_key
from visionbench.scenarios.fresh import EngineJob, PerEngine, in_fresh_process
from visionbench.scenarios.plan import study_calibration
from visionbench.scenarios.scenario import Setup, Task

#: Fresh processes per engine and precision (``--repeats`` overrides; ``--quick``: 2).
PROCESSES = 5
QUICK_PROCESSES = 2
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
#: Seconds one process may take to its first answer (quantization included).
TIMEOUT = 1800.0
PHASES = ("start", "import", "read", "prepare", "first_inference", "total")


@dataclass
class Job(EngineJob):
    started: float  # time.time() just before the process was started


def first_answer(conn: Connection, job: Job) -> None:
    """The fresh process (``launch.child``'s target): import the engine, prepare the model,
    answer once, report."""
    up = time.time() - job.started
    engine = get_engine(job.engine)
    t = time.perf_counter()
    importlib.import_module(engine.module)
    imported = time.perf_counter() - t
    cal, _ = study_calibration(job.cfg, job.model, job.dataset)
    with watch() as cache:
        session = engine.prepare(job.cfg.spec(engine, job.model, job.precision, 1, cal))
    x = session.feed(input_pool(job.model, 1, seed=job.cfg.study.seed, pool=1)[0])
    t = time.perf_counter()
    session.run(x)
    first = time.perf_counter() - t
    ex = session.execution
    conn.send(Result({"start": up, "import": imported, "read": ex.read_seconds,
                      "prepare": ex.prepare_seconds, "first_inference": first * 1e3,
                      "total": time.time() - job.started, "peak_rss_mib": process_peak_mib(),
                      "cache": events_text(cache.events)}))


def _drop_caches() -> None:
    try:
        os.sync()
        DROP_CACHES.write_text("3\n")
    except OSError as e:
        raise VisionbenchError(f"--drop-caches needs root: cannot write {DROP_CACHES} "
                               f"({e.strerror})") from e


@contextlib.contextmanager
def _fresh_cache() -> Any:
    """A cache folder whose models are the real ones and whose INT8 folder is empty."""
    with tempfile.TemporaryDirectory(prefix="visionbench-nocache-") as tmp:
        (Path(tmp) / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
        yield tmp


def one_process(job: Job, cache: str | None) -> dict[str, Any]:
    """One fresh process's phases; ``cache``: its VISIONBENCH_CACHE (--no-cache: a fresh INT8
    folder), else the parent's."""
    job.started = time.time()
    return in_fresh_process("visionbench.scenarios.cold:first_answer", job, job.engine, TIMEOUT,
                            {"VISIONBENCH_CACHE": cache} if cache is not None else None)


class ColdScenario(PerEngine[ColdStartRun]):
    """Each engine x precision, started ``processes`` times in fresh processes."""

    record = ColdStartRun
    record_key = staticmethod(cold_key)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> ColdStartRun:
        cfg, started = setup.cfg, now()
        n = cfg.timing.repeats or (QUICK_PROCESSES if cfg.timing.quick else PROCESSES)
        step = reporter.steps(self.key(task), n)
        runs = []
        for i in range(n):
            if step:
                step(i, "starting a fresh process")
            if cfg.study.drop_caches:
                _drop_caches()
            with contextlib.ExitStack() as stack:
                cache = stack.enter_context(_fresh_cache()) if cfg.study.no_cache else None
                runs.append(one_process(Job(cfg, setup.model, setup.dataset, task.engine,
                                            task.precision, 0.0), cache))
        if step:
            step(n, "done")
        phases = {}
        for name in PHASES:
            values = [r[name] for r in runs if r[name] is not None]
            if values:
                phases[name] = Spread(median=statistics.median(values), min=min(values),
                                      max=max(values))
        return ColdStartRun(
            engine=task.engine, precision=task.precision,
            model=task.model if self.in_suite else None, status="ok", processes=n,
            file_cache="dropped before each process" if cfg.study.drop_caches else "warm",
            quantization=None if task.precision != "int8" else
            "re-run in each process (--no-cache)" if cfg.study.no_cache else "read from the cache",
            phases=phases, per_process=[{k: r[k] for k in (*PHASES, "peak_rss_mib")} for r in runs],
            peak_rss_mib=statistics.median(r["peak_rss_mib"] for r in runs),
            cache=runs[0]["cache"], started_at=started, finished_at=now())

    def add(self, setup: Setup, record: ColdStartRun, reporter: Reporter) -> None:
        setup.store.add(record)
        reporter.note(f"{record.key}: {record.status}" + (
            f", first answer after {record.phases['total'].median:.2f} s (median of "
            f"{record.processes} fresh processes)" if record.status == "ok" else
            f": {record.reason}"))

