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
against the default on its per-round ratios (a paired t-test): load that drifts over the minutes of a
search moves both sides of a round alike, where measuring one setting after another reads the
drift as a difference. The winner is the setting with the highest median ratio; the verdict says
whether the rounds show it faster. Each setting's cost is estimated from what was measured so far
(images/s, preparation), so exploring stops while the confirmation still fits the budget."""

from __future__ import annotations

import time
from dataclasses import replace

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.reporter import Reporter
from visionbench.results import RunStore, TuneOutcome
from visionbench.results.schema import tune_key
from visionbench.scenarios.driver import open_run, run_scenarios
from visionbench.scenarios.scenario import Scenario, Setup, Task, not_run
from visionbench.scenarios.search import Search


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
        engine = setup.engines[task.engine]
        engine.prepare(setup.cfg.spec(engine, setup.model, task.precision, 1, setup.cal)).close()
        self.deadline += time.monotonic() - t0
        share = max(self.deadline - time.monotonic(), 0.0) / (len(self.todo) + 1)
        reporter.note(f"tune {task.engine} {task.precision}: {share:.0f} s")
        return Search(task, setup, setup.cfg, share, self.bound, reporter).run()

    def add(self, setup: Setup, record: TuneOutcome, reporter: Reporter) -> None:
        setup.store.add(record)


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
