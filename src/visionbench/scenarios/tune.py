"""visionbench tune: per engine and precision, the setting with the highest throughput (batch size
x pinned instances x threads per instance; for OpenVINO also streams x infer requests in flight
under its THROUGHPUT hint), optionally with every call's p99 latency under a bound, within a
wall-time budget.

The search starts from what the engine's own benchmark tool runs: the setting to beat, measured
first (OpenVINO: its THROUGHPUT hint with its optimal requests at the study's batch, as
benchmark_app runs it; other engines: what ``visionbench run`` measures), then the study's
reference method beside it. It climbs batch sizes on the engine's configuration until throughput
stops rising, then explores around the two best: streams x requests, pinned instances, the
reference method. Every window holds at least MIN_BATCHES batches; a setting that cannot get them
within the time left is left out and reported.

It then confirms: the default and the best few are measured round by round, every setting once
per round, the order rotated between rounds, at least MIN_ROUNDS rounds, and each is judged
against the default on its per-round ratios (a sign test): load that drifts over the minutes of a
search moves both sides of a round alike, where measuring one setting after another reads the
drift as a difference. The winner is the setting with the highest median ratio; the verdict says
whether the rounds show it faster. Each setting's cost is estimated from what was measured so far
(images/s, preparation), so exploring stops while the confirmation still fits the budget."""

from __future__ import annotations

import math
import re
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from visionbench.config import RunConfig
from visionbench.engines import Engine, Precision
from visionbench.errors import VisionbenchError, describe
from visionbench.results import Measurement, RunStore, TuneOutcome
from visionbench.results.compare import paired_verdict
from visionbench.results.schema import tune_key
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
#: Least batches a timed window holds (explore and confirm): a window of one large batch ranks
#: settings on a single call.
MIN_BATCHES = 3
EXPLORE_WINDOW = 1.0  # seconds at least
#: Warm-up batches (at least one per request in flight): the first large batch after one
#: warm-up call still runs slow.
WARMUP = 2
CONFIRM_WINDOW = 2.0
MIN_ROUNDS = 3
MAX_ROUNDS = 6  # six rounds that agree give a sign test p of 0.03
#: Least share of each engine x precision's budget kept for the confirmation (more when
#: confirming the contenders as they stand is estimated to need more).
CONFIRM_SHARE = 0.4
#: Best explored settings confirmed beside the default.
CONTENDERS = 3
#: The batch ladder pauses after STALL sizes without a gain of GAIN over the best (and goes on
#: once the variants are explored, if time is left).
GAIN = 1.03
STALL = 2
#: Seconds to start a pinned instance's process before it prepares the model.
INSTANCE_START = 3.0
#: The engine options a setting sets itself.
SEARCHED = ("streams", "requests", "hint", "sessions")


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
    """One point of the search. One instance runs in this process, unpinned, on the run's threads
    (the default layout); several are pinned, one thread per core each. ``method`` "engine" is
    the engine's own throughput configuration (OpenVINO's THROUGHPUT hint), with ``streams``
    and ``requests`` in flight where given (else the engine's choice)."""

    batch: int
    instances: int = 1
    cores_per_instance: int | None = None
    method: str = "reference"
    streams: int | None = None
    requests: int | None = None

    @property
    def shape(self) -> str:
        """The setting but its method (which a measurement's id holds apart): b64-s2-r4."""
        return (f"b{self.batch}" + (f"-i{self.instances}x{self.cores_per_instance}"
                                    if self.cores_per_instance else "")
                + (f"-s{self.streams}" if self.streams else "")
                + (f"-r{self.requests}" if self.requests else ""))

    @property
    def tag(self) -> str:
        """The whole setting: b64-engine-s2-r4."""
        return self.shape.replace(f"b{self.batch}", f"b{self.batch}-engine", 1) \
            if self.method == "engine" else self.shape

    def in_flight(self, threads: int) -> int:
        """Requests in flight: as asked, else one per stream, else (the engine's choice) at most
        one per thread; one synchronous call for the reference method."""
        if self.method == "reference":
            return self.requests or 1
        return self.requests or self.streams or threads

    def warmup(self, threads: int) -> int:
        """Warm-up batches, as the harness runs them."""
        return max(WARMUP, self.in_flight(threads))

    def as_dict(self, threads: int) -> dict[str, Any]:
        return {"batch_size": self.batch, "instances": self.instances,
                "cores_per_instance": self.cores_per_instance,
                "threads": self.cores_per_instance or threads, "method": self.method,
                "streams": self.streams, "requests": self.requests}

    def config(self, cfg: RunConfig, engine: Engine, precision: Precision, window: float | None,
               iterations: int | None, warmup: int) -> RunConfig:
        """The configuration that measures this setting for one window."""
        options = {k: v for k, v in cfg.study.engine_options.items() if k not in SEARCHED}
        options |= {k: v for k, v in (("streams", self.streams), ("requests", self.requests)) if v}
        return cfg.replace(
            batch_size=self.batch, batch_sizes=None, layout=None,
            instances=self.instances if self.cores_per_instance else None,
            cores_per_instance=self.cores_per_instance, methods=[self.method],
            engine_options=options,
            threads=self.cores_per_instance or cfg.launch.threads,
            threads_explicit=cfg.launch.threads_explicit and not self.cores_per_instance,
            duration=window, iterations=iterations, repeats=1, warmup=warmup,
        ).for_method(engine, self.method, "throughput", precision)


def rerun_command(cfg: RunConfig, engine: str, precision: str, s: Setting) -> str:
    """The ``visionbench run`` command that measures ``s`` with the study's repeats."""
    args = ["visionbench", "run", "--engine", engine, "--precision", precision,
            "--mode", "throughput", "--method", s.method, "--batch-size", str(s.batch)]
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
    if s.requests:
        args += ["--requests", str(s.requests)]
    return shlex.join(args)


T = TypeVar("T")


def rotation(settings: Sequence[T], round_: int) -> list[T]:
    """The order of one confirmation round: the settings rotated by the round's number, so each
    takes every place in turn (two settings alternate AB, BA)."""
    k = round_ % len(settings)
    return [*settings[k:], *settings[:k]]


def interleave(settings: Sequence[T], rounds: int, measure: Callable[[T, int], Any]
               ) -> dict[T, list[Any]]:
    """Every setting measured once per round, in ``rotation`` order: each one's results by round."""
    out: dict[T, list[Any]] = {s: [] for s in settings}
    for k in range(rounds):
        for s in rotation(settings, k):
            out[s].append(measure(s, k))
    return out


def per_round_ratios(ips: dict[T, list[float]], default: T) -> dict[T, list[float]]:
    """Each setting's images/s over the default's, round by round."""
    return {s: [a / b for a, b in zip(v, ips[default], strict=True)] for s, v in ips.items()}


class Search:
    """The search for one engine and precision within ``share`` seconds."""

    def __init__(self, task: Task, setup: Setup, cfg: RunConfig, share: float,
                 bound: float | None, reporter: Reporter) -> None:
        self.task, self.setup, self.cfg, self.bound, self.reporter = task, setup, cfg, bound, reporter
        self.share = share
        self.deadline = time.monotonic() + share
        self.explored: dict[Setting, Measurement] = {}
        self.left_out: list[str] = []
        self.prepare = 0.0
        self.cores = [c for node in numa_cores() for c in node]
        self.engine = setup.engines[task.engine]
        self.threads = cfg.launch.threads
        self.own = self.engine.own_method("throughput", task.precision, self.threads)[0] is not None
        self.requests = any(o.name == "requests" for o in self.engine.options)

    def within(self, m: Measurement) -> bool:
        return m.status == "ok" and (self.bound is None or (m.latency is not None
                                                           and m.latency.p99_ms <= self.bound))

    def kept_bound(self, rounds: list[Measurement]) -> bool:
        """Whether a setting's confirmation rounds kept the bound: the median of their p99."""
        return self.bound is None or statistics.median(
            m.latency.p99_ms if m.latency else math.inf for m in rounds) <= self.bound

    def rate(self, s: Setting) -> float | None:
        """Images/s expected of ``s``: the nearest setting measured so far (batch size, then the
        same method and layout)."""
        ok = [(k, m) for k, m in self.explored.items() if m.status == "ok" and m.throughput_ips]
        if not ok:
            return None
        _, ref = min(ok, key=lambda km: (abs(math.log2(km[0].batch / s.batch)),
                                         km[0].method != s.method, km[0].instances != s.instances))
        return ref.throughput_ips

    def window(self, s: Setting, floor: float) -> tuple[float | None, int | None]:
        """A window (seconds, or calls when nothing is measured yet) that holds MIN_BATCHES
        batches, and at least ``floor`` seconds."""
        rate = self.rate(s)
        if rate is None:
            return None, MIN_BATCHES * s.in_flight(self.threads)
        # A window ends within half a request of its duration (harness.timing): half a request
        # more keeps the last of MIN_BATCHES in it.
        call = s.batch * s.instances / rate
        return max(floor, (MIN_BATCHES + s.in_flight(self.threads) / 2) * call), None

    def cost(self, s: Setting, floor: float, windows: int = 1) -> float:
        """Seconds to prepare, warm up and time ``s`` for ``windows`` windows (0 if unknown)."""
        rate = self.rate(s)
        if rate is None:
            return 0.0
        call = s.batch * s.instances / rate  # instances and requests share the machine
        flight = s.in_flight(self.threads)
        seconds, _ = self.window(s, floor)
        start = self.prepare + (INSTANCE_START if s.cores_per_instance else 0.0)
        # a window ends with the completion of the requests in flight: at most half a request
        # (``flight`` calls) past its time
        return windows * (start + s.warmup(self.threads) * call + seconds + flight * call / 2)

    def default(self) -> Setting:
        """The setting to beat: the engine's own throughput configuration at the study's batch,
        as its benchmark tool runs it, else what ``visionbench run`` measures."""
        batch = self.cfg.batch_for(self.task.precision, "throughput")
        return Setting(batch, method="engine" if self.own else "reference")

    def contenders(self) -> list[Setting]:
        """The settings to confirm: the default first, then the best explored."""
        default = self.default()
        return [default, *[s for s in self.ranked() if s != default][:CONTENDERS]]

    def confirm_cost(self, candidates: list[Setting], rounds: int, floor: float) -> float:
        return sum(self.cost(s, floor, rounds) for s in candidates)

    def fits(self, s: Setting) -> bool:
        """Whether exploring ``s`` leaves time to confirm the contenders as they stand; if not,
        ``s`` is left out, with the reason."""
        reserve = max(CONFIRM_SHARE * self.share,
                      self.confirm_cost(self.contenders(), MIN_ROUNDS, EXPLORE_WINDOW))
        cost = self.cost(s, EXPLORE_WINDOW)
        left = self.deadline - reserve - time.monotonic()
        if cost <= left:
            return True
        if not any(text.startswith(f"{s.tag}: ") for text in self.left_out):
            self.left_out.append(f"{s.tag}: {MIN_BATCHES} batches need about {cost:.0f} s, "
                                 f"{max(left, 0):.0f} s left before the confirmation")
        return False

    def measure(self, s: Setting, phase: str, floor: float, tag: str | None = None) -> Measurement:
        window, iterations = self.window(s, floor)
        cfg = s.config(self.cfg, self.engine, self.task.precision, window, iterations,
                       s.warmup(self.threads))
        task = replace(self.task, batch=s.batch, method=s.method, tag=tag or f"{phase}-{s.shape}")
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

    def explore_one(self, s: Setting, always: bool = False) -> Measurement | None:
        if s in self.explored or not (always or self.fits(s)):
            return self.explored.get(s)
        m = self.explored[s] = self.measure(s, "explore", EXPLORE_WINDOW)
        return m

    def variants(self, batch: int) -> list[Setting]:
        """Around one batch size: streams x requests in flight (where the engine takes them),
        pinned instances filling the machine, and the reference method."""
        out: list[Setting] = []
        if self.own and self.requests:
            ran = {(m.batch_size, m.engine_details.get("num_streams"),
                    m.engine_details.get("requests_in_flight"))
                   for m in self.explored.values() if m.status == "ok" and m.method == "engine"}
            for streams in (2 ** i for i in range(8)):
                if streams > self.threads:
                    break
                out += [Setting(batch, method="engine", streams=streams, requests=r)
                        for r in (streams, 2 * streams) if r > 1 and (batch, streams, r) not in ran]
        n_cores = len(self.cores)
        out += [Setting(batch, n, n_cores // n) for n in (2 ** i for i in range(1, 10))
                if n <= n_cores and n_cores % n == 0]
        if self.own:
            out.append(Setting(batch))
        return out

    def explore(self) -> None:
        """The default, the reference method beside it, then batch sizes upwards until throughput
        stops rising, then the variants around the two best; with time left, the larger batch
        sizes the climb skipped, and again around the best."""
        default = self.default()
        self.explore_one(default, always=True)
        if self.own:
            self.explore_one(Setting(default.batch))
        model = self.setup.model
        ladder = [b for b in (self.cfg.study.batch_sizes or LADDER)
                  if model.fixed_batch is None or b == model.fixed_batch]
        rest = self.climb(ladder, STALL)
        self.around_best()
        if rest:
            self.climb(rest, None)
            self.around_best()

    def climb(self, ladder: list[int], stall_limit: int | None) -> list[int]:
        """Explore ``ladder`` in order on the default's method; the batch sizes left when
        throughput stalled (none when the bound, memory, a failure or the budget stopped it)."""
        best = max((m.throughput_ips or 0.0 for m in self.explored.values() if self.within(m)),
                   default=0.0)
        stall = 0
        method = self.default().method
        for i, b in enumerate(ladder):
            s = Setting(b, method=method)
            try:
                check_memory(self.setup.model, b)
            except VisionbenchError as e:
                self.reporter.note(f"tune: batch {b} and above left out: {e}")
                return []
            m = self.explore_one(s)
            if m is None:
                self.reporter.note(f"tune {self.task.engine} {self.task.precision}: batch {b} and "
                                   f"above left out (budget)")
                return []
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
                self.explore_one(s)

    def ranked(self) -> list[Setting]:
        """Explored settings within the bound, fastest first."""
        ok = [(s, m) for s, m in self.explored.items() if self.within(m)]
        return [s for s, _ in sorted(ok, key=lambda sm: -(sm[1].throughput_ips or 0.0))]

    def plan_confirmation(self) -> tuple[list[Setting], int, float]:
        """The contenders, rounds and least window that fit the time left: fewer rounds first
        (down to MIN_ROUNDS), then shorter windows, then the slowest contenders dropped."""
        candidates = self.contenders()
        left = self.deadline - time.monotonic()
        for floor in (CONFIRM_WINDOW, EXPLORE_WINDOW):
            for rounds in range(MAX_ROUNDS, MIN_ROUNDS - 1, -1):
                if self.confirm_cost(candidates, rounds, floor) <= left:
                    return candidates, rounds, floor
        while len(candidates) > 2 and self.confirm_cost(candidates, MIN_ROUNDS, EXPLORE_WINDOW) > left:
            candidates.pop()
        return candidates, MIN_ROUNDS, EXPLORE_WINDOW

    def run(self) -> TuneOutcome:
        t0 = time.monotonic()
        self.explore()
        candidates, rounds, floor = self.plan_confirmation()
        default = candidates[0]
        done = interleave(candidates, rounds, lambda s, k: self.measure(
            s, "confirm", floor, tag=f"confirm{k + 1}-{s.shape}"))
        out = TuneOutcome(engine=self.task.engine, precision=self.task.precision, status="ok",
                          max_latency_ms=self.bound, budget_seconds=round(self.share, 1),
                          explored=len(self.explored), rounds=rounds, left_out=self.left_out,
                          default=done[default][0].id,
                          default_setting=default.as_dict(self.threads))
        measured = {s: ms for s, ms in done.items() if all(m.status == "ok" for m in ms)}
        ips = {s: [m.throughput_ips or 0.0 for m in ms] for s, ms in measured.items()}
        ratios = per_round_ratios(ips, default) if default in ips else {}
        d_ok = default in measured
        out.default_within_bound = self.kept_bound(done[default]) if d_ok else None
        out.default_ips = statistics.median(ips[default]) if d_ok else None
        feasible = [s for s, ms in measured.items() if self.kept_bound(ms)]
        out.confirmed = [{"tag": s.tag, **s.as_dict(self.threads), "ips": ips.get(s),
                          "median_ips": statistics.median(ips[s]) if s in ips else None,
                          "ratios": ratios.get(s),
                          "median_ratio": statistics.median(ratios[s]) if s in ratios else None,
                          "within_bound": s in feasible,
                          "failed": next((m.reason for m in done[s] if m.status != "ok"), None)}
                         for s in candidates]
        if not feasible:
            out.status = "none-within-bound" if measured else "failed"
            out.reason = (f"no setting kept p99 within {self.bound} ms" if self.bound is not None
                          and measured else "no setting could be measured")
        else:
            key: Callable[[Setting], float] = (
                (lambda s: statistics.median(ratios[s])) if ratios
                else (lambda s: statistics.median(ips[s])))
            w = max(feasible, key=key)
            out.winner, out.winner_setting = done[w][0].id, w.as_dict(self.threads)
            out.winner_command = rerun_command(self.cfg, self.task.engine, self.task.precision, w)
            out.winner_ips = statistics.median(ips[w])
            if w == default:
                out.speedup_vs_default, out.verdict = 1.0, "the default is the best"
            elif ratios:
                out.speedup_vs_default = statistics.median(ratios[w])
                out.p_value, out.verdict, out.verdict_reason = paired_verdict(ratios[w])
            else:
                out.verdict, out.verdict_reason = "cannot tell", "the default failed"
        out.seconds_used = round(time.monotonic() - t0, 1)
        return out


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

    def key(self, task: Task) -> str:
        return tune_key(task.engine, task.precision)

    def keys(self, cfg: RunConfig, tasks: list[Task]) -> list[str]:
        return list(dict.fromkeys(self.key(t) for t in tasks))

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> TuneOutcome:
        return TuneOutcome(engine=task.engine, precision=task.precision, status=status,  # type: ignore[arg-type]
                           reason=reason)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> TuneOutcome:
        self.todo.remove(task)
        # --replace: the search replaced starts afresh; its measurements go with it
        setup.store.drop(lambda m: (m.engine, m.precision) == (task.engine, task.precision))
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
    cfg = cfg.replace(modes=["throughput"], methods=["reference"])
    if cfg.existing == "resume":
        raise VisionbenchError(
            "a tune run is not resumed: its search adapts as it goes and its verdicts compare "
            "settings measured in one sitting; search the precisions it lacks again with "
            "visionbench tune --append --precision ... --output DIR")
    scenarios = [Tune(budget, bound)]
    return run_scenarios(open_run(cfg, reporter, command, "tune", scenarios), scenarios, reporter)
