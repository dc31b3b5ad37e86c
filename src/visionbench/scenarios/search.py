"""tune's search for one engine and precision: the climb up the batch ladder, the exploration
around the best settings, and the paired confirmation (``tune``'s docstring has the method)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError, describe
from visionbench.launch.environment import Environment
from visionbench.reporter import Reporter
from visionbench.results import Measurement, TuneOutcome
from visionbench.results.compare import paired_verdict
from visionbench.scenarios.measure import measure_task
from visionbench.scenarios.plan import check_memory
from visionbench.scenarios.rounds import interleave, per_round_ratios
from visionbench.scenarios.scenario import Setup, Task, unmeasured
from visionbench.scenarios.setting import (
    Setting,
    agrees,
    control,
    environments,
    faster_than_control,
    rerun_command,
)
from visionbench.settings import LADDER
from visionbench.sysinfo import numa_cores

#: Batch sizes explored upwards (``--batch-sizes`` replaces them).
#: Least batches a timed window holds (explore and confirm): a window of one large batch ranks
#: settings on a single call.
MIN_BATCHES = 3
EXPLORE_WINDOW = 1.0  # seconds at least
CONFIRM_WINDOW = 2.0
MIN_ROUNDS = 3
MAX_ROUNDS = 6
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
        given = cfg.study.engine_options
        #: The engine's concurrency variants that keep the options given.
        self.space = [v for v in self.engine.search_space(task.precision, self.threads)
                      if agrees(v, given)]
        #: The environment variants (one knob each), where the user gave no environment.
        self.environments = environments(self.engine, cfg, reporter) \
            if cfg.environment.default else {}

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
        start = self.prepare + (INSTANCE_START if s.cores_per_instance or s.environment else 0.0)
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
        out = [default, *[s for s in self.ranked() if s != default][:CONTENDERS]]
        # an environment's control (the same setting in a fresh process as shipped) beside it
        return list(dict.fromkeys([*out, *[control(s) for s in out if s.environment]]))

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
        """Around one batch size: the engine's concurrency variants (OpenVINO's streams x
        requests, concurrent sessions) that keep the options given, pinned instances filling the
        machine, and the reference method."""
        out: list[Setting] = []
        if self.space:
            ran = {(m.batch_size, m.concurrency.executors, m.concurrency.in_flight)
                   for m in self.explored.values()
                   if m.status == "ok" and m.method == "engine" and m.concurrency is not None}
            out += [Setting(batch, method="engine", variant=v) for v in self.space
                    if (batch, v.concurrency.executors, v.concurrency.in_flight) not in ran]
        n_cores = len(self.cores)
        out += [Setting(batch, n, n_cores // n) for n in (2 ** i for i in range(1, 10))
                if n <= n_cores and n_cores % n == 0]
        if self.own:
            out.append(Setting(batch))
        return out

    def explore(self) -> None:
        """The default, the reference method beside it, then batch sizes upwards until throughput
        stops rising, then the environment variants on the best so far (before the engine's
        variants: they are few, and the engine's settings alone found nothing on 2 cores), then
        the variants around the two best; with time left, the larger batch sizes the climb
        skipped, again around the best, and the environments that won on a new best."""
        default = self.default()
        self.explore_one(default, always=True)
        if self.own:
            self.explore_one(Setting(default.batch))
        model = self.setup.model
        ladder = [b for b in (self.cfg.study.batch_sizes or LADDER)
                  if model.fixed_batch is None or b == model.fixed_batch]
        rest = self.climb(ladder, STALL)
        won = self.around_environment(list(self.environments.values()))
        self.around_best()
        if rest:
            self.climb(rest, None)
            self.around_best()
        self.around_environment(won)

    def around_environment(self, envs: list[Environment]) -> list[Environment]:
        """The best setting as shipped in a fresh process (the control), then under each of
        ``envs``, one knob at a time, and the best allocator with the best OpenMP variant where
        both beat the control; the variants that beat it."""
        best = next((s for s in self.ranked() if s.environment is None), None)
        if best is None or not envs:
            return []
        base = self.explore_one(control(best))
        if base is None or not self.within(base):
            return []
        won: dict[bool, tuple[float, Environment]] = {}
        for env in envs:
            m = self.explore_one(replace(best, environment=env))
            if m is not None and self.within(m) and m.throughput_ips > base.throughput_ips * GAIN:
                openmp = env.allocator == "glibc"
                if m.throughput_ips > won.get(openmp, (0.0, env))[0]:
                    won[openmp] = (m.throughput_ips, env)
        if len(won) == 2:
            a, o = won[False][1], won[True][1]
            both = Environment(a.allocator, o.omp_runtime, o.env)
            if both not in envs:
                self.explore_one(replace(best, environment=both))
        return [env for _, env in won.values()]

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
        (down to MIN_ROUNDS), then shorter windows, then the slowest contenders dropped, never
        the control of an environment variant kept (it cannot win without it)."""
        candidates = self.contenders()
        left = self.deadline - time.monotonic()
        for floor in (CONFIRM_WINDOW, EXPLORE_WINDOW):
            for rounds in range(MAX_ROUNDS, MIN_ROUNDS - 1, -1):
                if self.confirm_cost(candidates, rounds, floor) <= left:
                    return candidates, rounds, floor
        while len(candidates) > 2 and self.confirm_cost(candidates, MIN_ROUNDS, EXPLORE_WINDOW) > left:
            needed = {control(s) for s in candidates if s.environment and control(s) != s}
            candidates.remove(next(s for s in reversed(candidates[1:]) if s not in needed))
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
        feasible = [s for s, ms in measured.items() if self.kept_bound(ms)
                    and faster_than_control(s, ips)]
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
                hit = sum(a.disturbed or b.disturbed
                          for a, b in zip(done[w], done[default], strict=True))
                if hit:
                    out.verdict_reason += (f"; rests on disturbed figures: {hit} of "
                                           f"{len(done[w])} rounds had a window other processes or "
                                           "the host disturbed")
            else:
                out.verdict, out.verdict_reason = "cannot tell", "the default failed"
        out.seconds_used = round(time.monotonic() - t0, 1)
        return out

