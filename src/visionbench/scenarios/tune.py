"""visionbench tune: per engine and precision, the setting (batch size x pinned instances x threads
per instance x OpenVINO streams) with the highest throughput, optionally with every call's p99
latency under a bound, within a wall-time budget.

The search explores cheaply, one short window per setting: batch sizes upwards on the default
layout until throughput stops rising or the latency bound is crossed; then, at the two best batch
sizes, pinned instances and streams. It then re-measures the best few and the default setting (what
``visionbench run`` measures) with repeats, and names the fastest of those: a winner is never a
setting timed once, and never slower than the default as measured beside it.

Each setting's cost is estimated from what was already measured (time per image, preparation) so
the search stops exploring while the re-measurements still fit the budget."""

from __future__ import annotations

import math
import re
import shlex
import time
from dataclasses import dataclass, replace

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError, describe
from visionbench.results import Measurement, RunStore, TuneOutcome
from visionbench.results.compare import throughput_stats, verdict
from visionbench.scenarios.base import (
    Reporter,
    Scenario,
    Setup,
    Task,
    check_memory,
    not_run,
    open_run,
    run_scenarios,
    unmeasured,
)
from visionbench.scenarios.study import measure_task
from visionbench.sysinfo import numa_cores

#: Batch sizes explored upwards (``--batch-sizes`` replaces them).
LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EXPLORE_WINDOW = 1.0  # seconds; a window always holds at least one call
EXPLORE_WARMUP = 2  # the first large batch after one warm-up call still runs slow
CONFIRM_WINDOW = 2.0
CONFIRM_REPEATS = 3
CONFIRM_WARMUP = 2
#: Least share of each engine x precision's budget kept for the re-measurements (more when
#: re-measuring the contenders as they stand, one call per repeat, is estimated to need more).
CONFIRM_SHARE = 0.4
#: Best explored settings re-measured beside the default.
CONTENDERS = 3
#: The batch ladder pauses after STALL sizes without a gain of GAIN over the best (and goes on
#: once instances and streams are explored, if time is left).
GAIN = 1.03
STALL = 2
#: Seconds to start a pinned instance's process before it prepares the model.
INSTANCE_START = 3.0


def parse_budget(text: str) -> float:
    """'5m', '90s', '1h30m' or plain seconds, as seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    elif re.fullmatch(r"(\d+(\.\d+)?[hms])+", t):
        unit = {"h": 3600, "m": 60, "s": 1}
        seconds = sum(float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([hms])", t))
    else:
        raise VisionbenchError(f"--budget takes a duration such as 5m, 90s or 1h30m, got '{text}'")
    if seconds <= 0:
        raise VisionbenchError(f"--budget must be positive, got '{text}'")
    return seconds


@dataclass(frozen=True)
class Setting:
    """One point of the search. One instance runs in this process, unpinned, on the run's
    threads (the default layout); several are pinned, one thread per core each."""

    batch: int
    instances: int = 1
    cores_per_instance: int | None = None
    streams: int | None = None

    @property
    def tag(self) -> str:
        return (f"b{self.batch}" + (f"-i{self.instances}x{self.cores_per_instance}"
                                    if self.cores_per_instance else "")
                + (f"-s{self.streams}" if self.streams else ""))

    def as_dict(self, threads: int) -> dict[str, int | None]:
        return {"batch_size": self.batch, "instances": self.instances,
                "cores_per_instance": self.cores_per_instance,
                "threads": self.cores_per_instance or threads, "streams": self.streams or 1}

    def config(self, cfg: RunConfig, window: float, repeats: int, warmup: int) -> RunConfig:
        return cfg.replace(
            batch_size=self.batch, batch_sizes=None, layout=None,
            instances=self.instances if self.cores_per_instance else None,
            cores_per_instance=self.cores_per_instance,
            engine_options={k: v for k, v in cfg.study.engine_options.items() if k != "streams"}
            | ({"streams": self.streams} if self.streams else {}),
            threads=self.cores_per_instance or cfg.launch.threads,
            threads_explicit=cfg.launch.threads_explicit and not self.cores_per_instance,
            duration=window, iterations=None, repeats=repeats, warmup=warmup,
        )


def rerun_command(cfg: RunConfig, engine: str, precision: str, s: Setting) -> str:
    """The ``visionbench run`` command that measures ``s`` with the study's repeats."""
    args = ["visionbench", "run", "--engine", engine, "--precision", precision,
            "--mode", "throughput", "--batch-size", str(s.batch)]
    if cfg.study.model != "resnet50":
        args += ["--model", cfg.study.model]
    if cfg.study.weights is not None:
        args += ["--weights", str(cfg.study.weights)]
    if s.cores_per_instance:
        args += ["--instances", str(s.instances), "--cores-per-instance", str(s.cores_per_instance)]
    elif cfg.launch.threads_explicit:
        args += ["--threads", str(cfg.launch.threads)]
    if s.streams:
        args += ["--streams", str(s.streams)]
    return shlex.join(args)


class Search:
    """The search for one engine and precision within ``share`` seconds."""

    def __init__(self, task: Task, setup: Setup, cfg: RunConfig, share: float,
                 bound: float | None, reporter: Reporter) -> None:
        self.task, self.setup, self.cfg, self.bound, self.reporter = task, setup, cfg, bound, reporter
        self.share = share
        self.deadline = time.monotonic() + share
        self.explored: dict[Setting, Measurement] = {}
        self.prepare = 0.0
        self.cores = [c for node in numa_cores() for c in node]
        self.engine = setup.engines[task.engine]

    def within(self, m: Measurement) -> bool:
        return m.status == "ok" and (self.bound is None or (m.latency is not None
                                                           and m.latency.p99_ms <= self.bound))

    def estimate(self, s: Setting, window: float, repeats: int, warmup: int) -> float:
        """Seconds to prepare and time ``s``, from the nearest setting measured so far."""
        ok = [(k, m) for k, m in self.explored.items() if m.status == "ok" and m.throughput_ips]
        if not ok:
            return 0.0
        _, ref = min(ok, key=lambda km: (abs(math.log2(km[0].batch / s.batch)),
                                         km[0].instances != s.instances))
        call = s.batch * s.instances / ref.throughput_ips  # instances share the machine
        start = self.prepare + (INSTANCE_START if s.cores_per_instance else 0.0)
        return start + warmup * call + repeats * max(window, call)

    def default(self) -> Setting:
        """What ``visionbench run`` measures: the study's batch, one process on all threads."""
        return Setting(self.cfg.batch_for(self.task.precision, "throughput"))

    def contenders(self) -> list[Setting]:
        """The settings to re-measure: the default first, then the best explored."""
        default = self.default()
        return [default, *[s for s in self.ranked() if s != default][:CONTENDERS]]

    def confirm_cost(self, candidates: list[Setting], window: float) -> float:
        return sum(self.estimate(s, window, CONFIRM_REPEATS, CONFIRM_WARMUP) for s in candidates)

    def fits(self, s: Setting) -> bool:
        """Whether exploring ``s`` leaves time to re-measure the contenders as they stand."""
        # at least what re-measuring them takes with the shortest windows (one call per repeat)
        reserve = max(CONFIRM_SHARE * self.share, self.confirm_cost(self.contenders(), 1e-3))
        cost = self.estimate(s, EXPLORE_WINDOW, 1, EXPLORE_WARMUP)
        return time.monotonic() + cost <= self.deadline - reserve

    def measure(self, s: Setting, phase: str, window: float, repeats: int,
                warmup: int) -> Measurement:
        cfg = s.config(self.cfg, window, repeats, warmup)
        task = replace(self.task, batch=s.batch, tag=f"{phase}-{s.tag}")
        try:
            m = measure_task(task, self.engine, self.setup.model, cfg, self.setup.store,
                             self.reporter, self.setup.cal)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a setting that cannot run is a result, not the end of the search
            m = unmeasured(task, cfg, describe(e), status="failed")
        m = m.model_copy(update={"phase": phase})
        self.setup.store.add(m)
        self.reporter.done(m)
        if m.status == "ok":
            self.prepare = max(self.prepare, m.prepare_seconds)
        return m

    def variants(self, batch: int) -> list[Setting]:
        """Pinned instances filling the machine, and the engine's streams, at one batch size."""
        n_cores = len(self.cores)
        out = [Setting(batch, n, n_cores // n) for n in (2 ** i for i in range(1, 10))
               if n <= n_cores and n_cores % n == 0]
        if any(o.name == "streams" for o in self.engine.options):
            out += [Setting(batch, streams=s) for s in (2 ** i for i in range(1, 8))
                    if s <= self.cfg.launch.threads and batch % s == 0]
        return out

    def explore(self) -> None:
        """Batch sizes upwards until throughput stops rising, then instances and streams at the
        two best; with time left, the larger batch sizes the climb skipped, and again around the
        best."""
        model = self.setup.model
        ladder = [b for b in (self.cfg.study.batch_sizes or LADDER)
                  if model.fixed_batch is None or b == model.fixed_batch]
        rest = self.climb(ladder, STALL)
        self.around_best()
        if rest:
            self.climb(rest, None)
            self.around_best()

    def climb(self, ladder: list[int], stall_limit: int | None) -> list[int]:
        """Explore ``ladder`` in order on the default layout; the batch sizes left when
        throughput stalled (none when the bound, memory, a failure or the budget stopped it)."""
        best = max((m.throughput_ips or 0.0 for m in self.explored.values() if self.within(m)),
                   default=0.0)
        stall = 0
        for i, b in enumerate(ladder):
            s = Setting(b)
            try:
                check_memory(self.setup.model, b)
            except VisionbenchError as e:
                self.reporter.note(f"tune: batch {b} and above left out: {e}")
                return []
            if not self.fits(s):
                self.reporter.note(f"tune {self.task.engine} {self.task.precision}: batch {b} and "
                                   f"above left out (budget)")
                return []
            m = self.explored[s] = self.measure(s, "explore", EXPLORE_WINDOW, 1, EXPLORE_WARMUP)
            if not self.within(m):
                return []  # larger batches only take longer per call (or fail alike)
            stall = 0 if m.throughput_ips > best * GAIN else stall + 1
            best = max(best, m.throughput_ips)
            if stall_limit is not None and stall >= stall_limit:
                return ladder[i + 1:]
        return []

    def around_best(self) -> None:
        for b in dict.fromkeys(s.batch for s in self.ranked()[:2]):
            for s in self.variants(b):
                if s not in self.explored and self.fits(s):
                    self.explored[s] = self.measure(s, "explore", EXPLORE_WINDOW, 1, EXPLORE_WARMUP)

    def ranked(self) -> list[Setting]:
        """Explored settings within the bound, fastest first."""
        ok = [(s, m) for s, m in self.explored.items() if self.within(m)]
        return [s for s, _ in sorted(ok, key=lambda sm: -(sm[1].throughput_ips or 0.0))]

    def confirm(self) -> tuple[Setting, list[tuple[Setting, Measurement]]]:
        candidates = self.contenders()
        left = self.deadline - time.monotonic()
        for window in (CONFIRM_WINDOW, CONFIRM_WINDOW / 2, CONFIRM_WINDOW / 4, 1e-3):
            if self.confirm_cost(candidates, window) <= left:
                break  # 1e-3: one call per repeat
        while len(candidates) > 1 and self.confirm_cost(candidates, window) > left:
            candidates.pop()  # the slowest contender first; the default always stays
        return candidates[0], [(s, self.measure(s, "confirm", window, CONFIRM_REPEATS,
                                                CONFIRM_WARMUP)) for s in candidates]

    def run(self) -> TuneOutcome:
        t0 = time.monotonic()
        self.explore()
        default, confirmed = self.confirm()
        base = TuneOutcome(engine=self.task.engine, precision=self.task.precision, status="ok",
                           max_latency_ms=self.bound, budget_seconds=round(self.share, 1),
                           explored=len(self.explored))
        d = next(m for s, m in confirmed if s == default)
        base.default = d.id
        base.default_within_bound = self.within(d) if d.status == "ok" else None
        feasible = [(s, m) for s, m in confirmed if self.within(m)]
        if not feasible:
            base.status = "none-within-bound" if any(m.status == "ok" for _, m in confirmed) \
                else "failed"
            base.reason = (f"no setting kept p99 within {self.bound} ms" if self.bound is not None
                           and base.status != "failed" else "no setting could be measured")
        else:
            s, w = max(feasible, key=lambda sm: sm[1].throughput_ips or 0.0)
            base.winner, base.winner_setting = w.id, s.as_dict(self.cfg.launch.threads)
            base.winner_command = rerun_command(self.cfg, self.task.engine, self.task.precision, s)
            if d.status == "ok" and d.throughput_ips and w is not d:
                base.speedup_vs_default = w.throughput_ips / d.throughput_ips
                p, _, why = throughput_stats(d, w)
                base.p_value = p
                base.verdict = verdict(p, base.speedup_vs_default, max(d.cv or 0, w.cv or 0), why)[0]
            elif w is d:
                base.speedup_vs_default, base.verdict = 1.0, "the default is the best"
        base.seconds_used = round(time.monotonic() - t0, 1)
        return base


class Tune(Scenario[TuneOutcome]):
    """Every engine x precision searched in turn, sharing the budget; each one's unused time passes
    to the next. One-off preparation (INT8 quantization, cached for later runs) is done before an
    engine x precision's clock starts."""

    def __init__(self, budget: float, bound: float | None) -> None:
        self.budget, self.bound = budget, bound
        self.deadline = 0.0
        self.todo: list[Task] = []

    def tasks(self, setup: Setup, reporter: Reporter) -> list[Task]:
        self.deadline = time.monotonic() + self.budget
        # A --batch-sizes ladder makes one task per batch size; the search needs one per precision.
        tasks = list({(t.engine, t.precision): replace(t, tag="") for t in setup.tasks}.values())
        self.todo = [t for t in tasks if not_run(t, setup.cfg) is None]
        return tasks

    def describe(self, task: Task) -> str:
        return f"{task.engine} {task.precision}"

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> TuneOutcome:
        return TuneOutcome(engine=task.engine, precision=task.precision, status=status,  # type: ignore[arg-type]
                           reason=reason)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> TuneOutcome:
        self.todo.remove(task)
        t0 = time.monotonic()
        # quantize and cache outside the clock: a one-off, not a setting's cost
        setup.engines[task.engine].prepare(setup.model, task.precision, setup.cfg.launch.threads,
                                           setup.cal, 1).close()
        self.deadline += time.monotonic() - t0
        share = max(self.deadline - time.monotonic(), 0.0) / (len(self.todo) + 1)
        reporter.note(f"tune {task.engine} {task.precision}: {share:.0f} s")
        return Search(task, setup, setup.cfg, share, self.bound, reporter).run()

    def add(self, setup: Setup, record: TuneOutcome, reporter: Reporter) -> None:
        setup.store.add_tune(record)


def tune(cfg: RunConfig, budget: float, bound: float | None, reporter: Reporter,
         command: list[str]) -> RunStore:
    """Search every engine x precision of ``cfg`` within ``budget`` seconds in all."""
    if bound is not None and not bound > 0:
        raise VisionbenchError(f"--max-latency-ms must be positive, got {bound}")
    cfg = cfg.replace(modes=["throughput"])
    return run_scenarios(open_run(cfg, reporter, command, "tune"), [Tune(budget, bound)], reporter)
