"""A toy scenario, written as a contributor adds one (docs/contributing.md): this module (the
scenario and its entry), an API function and a CLI command, and nothing else of visionbench's.
It times each planned engine and precision once more, at batch 3, in one short window."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from visionbench.api import _command, study_config
from visionbench.cli.main import cli
from visionbench.cli.options import STUDY, TIMING, options, study
from visionbench.cli.running import execute
from visionbench.config import RunConfig
from visionbench.reporter import Reporter
from visionbench.results import Measurement, Results, RunStore
from visionbench.scenarios.driver import open_run, run_scenarios
from visionbench.scenarios.measure import measure_task
from visionbench.scenarios.scenario import Scenario, Setup, Task, unmeasured


class Toy(Scenario[Measurement]):
    def tasks(self, setup: Setup, reporter: Reporter) -> list[Task]:
        return [replace(t, tag="toy", batch=3) for t in setup.tasks
                if t.mode == "throughput" and t.method == "reference"]

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> Measurement:
        return unmeasured(task, setup.cfg, reason, status)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> Measurement:
        return measure_task(task, setup.engines[task.engine], setup.model, setup.cfg,
                            setup.store, reporter, setup.cal)

    def add(self, setup: Setup, record: Measurement, reporter: Reporter) -> None:
        setup.store.add(record)
        reporter.done(record)


def run_toy(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    scenarios = [Toy()]
    return run_scenarios(open_run(cfg, reporter, command, "study", scenarios), scenarios, reporter)


def toy(*, reporter: Reporter | None = None, command: list[str] | None = None,
        **options: Any) -> Results:
    """The API function."""
    cfg = study_config(modes=["throughput"], methods=["reference"], **options)
    return run_toy(cfg, reporter or Reporter(), _command(command, "toy", options)).results


@cli.command("toy")
@options(STUDY)
@options(TIMING)
def toy_command(**kw: Any) -> None:
    """The CLI command: times each engine and precision once more, at batch 3."""
    execute(toy, study(**kw))


