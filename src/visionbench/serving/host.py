"""What ``visionbench serve`` hosts: one model prepared on one engine and precision as the study
prepares it (the model resolved, INT8 calibrated on the study's samples), under the engine's own
throughput configuration (OpenVINO's THROUGHPUT hint and its optimal number of requests), so
that requests arriving at once run at once, one on each of the engine's requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from visionbench.config import RunConfig
from visionbench.engines import Precision, Session, get_engine
from visionbench.errors import VisionbenchError
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.scenarios.plan import plan_workload
from visionbench.scenarios.scenario import not_run


@dataclass
class Hosted:
    """A prepared session and what it is: the facts a load generator records beside its points."""

    model: ModelSpec
    batch: int
    session: Session
    configuration: dict[str, Any] = field(default_factory=dict)


def one_engine(cfg: RunConfig) -> tuple[str, Precision]:
    """The one engine and precision ``cfg`` serves; one line where it names several."""
    st = cfg.study
    if len(st.engines) != 1 or len(st.precisions) != 1:
        raise VisionbenchError("serve hosts one engine and one precision: give --engine and "
                               "--precision once each")
    return st.engines[0], st.precisions[0]


def host(cfg: RunConfig, reporter: Reporter) -> Hosted:
    """Prepare ``cfg``'s one model on its one engine and precision at its batch size (default 1);
    raises VisionbenchError on bad input or a precision this CPU or engine cannot run."""
    name, precision = one_engine(cfg)
    engine = get_engine(name)
    work = plan_workload(cfg, {engine.name: engine}, reporter)
    task = work.tasks[0]
    if (why := not_run(task, cfg)) is not None:
        raise VisionbenchError(f"{engine.name} cannot serve {precision.upper()} here: {why[1]}")
    own = cfg.for_method(engine, "engine", "throughput", precision)
    session = engine.prepare(own.spec(engine, work.model, precision, task.batch, work.cal))
    ex = session.execution
    return Hosted(work.model, task.batch, session, {
        "engine": engine.name, "precision": precision, "batch_size": task.batch,
        "threads": own.launch.threads,
        "executed_precision": ex.executed_precision, "requests": session.requests,
        "concurrency": ex.concurrency.text or "one synchronous request",
        "options": {k: str(v) for k, v in own.options_for(engine).items()},
        "versions": engine.versions(), "model_sha256": work.model.sha256,
        "prepare_seconds": round(ex.prepare_seconds, 2)})
