"""The vision workload suite (``visionbench suite``): the study (throughput at each workload's batch,
latency at batch 1, every precision, each BF16 and INT8 measurement with its fidelity to FP32) on
each workload, one run directory of kind ``suite``."""

from __future__ import annotations

from typing import Any

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.models import registry
from visionbench.reporter import Reporter
from visionbench.results import RunStore
from visionbench.scenarios.cold import ColdScenario
from visionbench.scenarios.driver import open_runs, run_scenarios
from visionbench.scenarios.pipeline import PipelineScenario
from visionbench.scenarios.profile import ProfileScenario
from visionbench.scenarios.scenario import Scenario
from visionbench.scenarios.study import Study

#: The suite's workloads, in the order they run and are shown: classifiers small to large, the
#: transformer, the detectors, the segmenter. Bump SUITE_VERSION when it or a workload changes:
#: suite scores compare only between runs of one version.
WORKLOADS = ("resnet50", "efficientnet-lite0", "mobilenet-v2", "mobilenet-v3-large", "vit-b16",
             "ssd-mobilenet", "retinanet", "deeplabv3")
SUITE_VERSION = 1


def workloads(names: str | list[str] | None) -> list[str]:
    """``--workloads``: a comma list of registered models, or ``all`` (the default)."""
    if names is None or names == "all" or names == ["all"]:
        return list(WORKLOADS)
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    items = [n for n in items if n]
    if not items:
        raise VisionbenchError("empty --workloads list")
    known = registry.entries()
    for n in items:
        if n not in known:
            raise VisionbenchError(f"unknown workload '{n}'; choose from {', '.join(known)} or all")
    return list(dict.fromkeys(items))


def stand_ins(names: list[str]) -> tuple[list[str], list[str]]:
    """``--quick``: each workload whose card names a lighter stand-in replaced by it, and a note
    saying so for each."""
    out, notes = [], []
    for n in names:
        stand_in = registry.get(n).card.quick_stand_in
        out.append(stand_in or n)
        if stand_in:
            notes.append(f"--quick: {n} is measured as {stand_in} ({registry.get(stand_in).card.summary})")
    return out, notes


def workload_config(cfg: RunConfig, name: str) -> RunConfig:
    """The study's configuration for one workload: its model, its suite batch (unless the user
    gave one), its calibration samples where its card asks for fewer; an engine without a
    definition of it records it unsupported instead of stopping the suite."""
    card = registry.get(name).card
    changes: dict = {"model": name, "engines_explicit": False, "workloads": None, "suite": True}
    if cfg.study.batch_size is None and card.suite_batch is not None:
        changes["batch_size"] = min(card.suite_batch, 16) if cfg.timing.quick else card.suite_batch
    if cfg.inputs.calibration_samples is None and card.calibration_samples is not None:
        changes["calibration_samples"] = min(card.calibration_samples, cfg.n_calibration)
    return cfg.replace(**changes)


def run(cfg: RunConfig, reporter: Reporter, command: list[str]) -> RunStore:
    """Check and plan every workload of ``cfg.study.workloads`` (building each model once), then
    measure them in turn, storing each measurement as it completes."""
    names = workloads(cfg.study.workloads)
    if cfg.study.batch_sizes:
        raise VisionbenchError("the suite measures each workload at its own batch: --batch-sizes "
                               "is for visionbench sweep")
    if cfg.study.accuracy:
        raise VisionbenchError("accuracy on --data is visionbench accuracy's, per classifier")
    scenarios: list[Scenario[Any]] = [Study()] if cfg.study.modes else []
    if cfg.study.cold:
        scenarios.append(ColdScenario(in_suite=True))
    if cfg.study.profile:
        scenarios.append(ProfileScenario(in_suite=True))
    if cfg.study.pipeline:
        scenarios.append(PipelineScenario(in_suite=True))
    if cfg.timing.quick:
        names, notes = stand_ins(names)
        for note in notes:
            reporter.note(note)
    setups = open_runs(cfg, [workload_config(cfg, n) for n in names], reporter, command, "suite",
                       scenarios)
    setups[0].store.results.suite_version = SUITE_VERSION
    return run_scenarios(setups, scenarios, reporter)
