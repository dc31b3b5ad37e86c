"""Command line: parse, call the API, print. Errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from visionbench import api
from visionbench.cli import machine, running, serving, tables
from visionbench.cli.options import (
    COMPARE,
    ENGINE,
    FLEET,
    INSTANCES,
    METHOD,
    PIPELINE,
    RUN_MODES,
    STUDY,
    STUDY_MODES,
    TIMING,
    TUNE,
    flags_of,
    int_list,
    node_list,
    options,
    study,
)
from visionbench.cli.running import console, execute, measure, report_run
from visionbench.errors import VisionbenchError
from visionbench.scenarios.mlperf.settings import Options as LoadgenOptions
from visionbench.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="visionbench")
def cli() -> None:
    """Image-classification inference benchmarks: ResNet-50 v1.5 at FP32, BF16 and INT8."""


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@options(RUN_MODES)
def run(**kw: Any) -> None:
    """Measure throughput and batch-1 latency per engine and precision."""
    execute(api.run, study(**kw))


@cli.command()
@click.option("--workloads", default="all", show_default=True,
              help="Comma list of workloads (`visionbench models` lists them), or all: the suite's "
                   "classifiers, transformer, detectors and segmenter.")
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@options(STUDY_MODES)
def suite(workloads: str, **kw: Any) -> None:
    """The vision workload suite: every workload x precision x mode, fidelity to FP32, the
    geometric means and suite scores."""
    for flag, name, default in (("--model", "model", "resnet50"), ("--weights", "weights", None),
                                ("--input-shape", "input_shape", None), ("--task", "task", None),
                                ("--input-name", "input_name", None), ("--accuracy", "accuracy", False),
                                ("--output-name", "output_name", None)):
        if kw.pop(name, default) not in (default, None, False):
            raise VisionbenchError(f"{flag} is for visionbench run; the suite's models are its "
                                   "--workloads")
    execute(lambda **k: api.suite(workloads, **k), study(**kw))


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128", show_default=True, callback=int_list,
              help="Comma list of batch sizes to measure.")
def sweep(batch_sizes: list[int], **kw: Any) -> None:
    """Throughput and per-batch latency at each batch size, per engine and precision."""
    execute(lambda **k: api.sweep(batch_sizes, **k), study(**kw))


@cli.command()
@options(STUDY)
@options(ENGINE)
@options(TUNE)
def tune(budget: str, max_latency_ms: float | None, batch_sizes: list[int] | None, **kw: Any) -> None:
    """Search batch size x instances x threads (x OpenVINO streams and requests) for the highest
    throughput per engine and precision, starting from the engine's own configuration, then
    confirm the best few beside it round by round before naming one."""
    execute(lambda **k: api.tune(budget, max_latency_ms=max_latency_ms, batch_sizes=batch_sizes, **k),
             study(**kw))


@cli.command()
@options(STUDY)
@options(ENGINE)
@METHOD
@click.option("--scenario", required=True,
              help="MLPerf Inference scenario(s) LoadGen drives: SingleStream, MultiStream, Server, "
                   "Offline (a comma list, or all).")
@options(flags_of(LoadgenOptions))
def mlperf(scenario: str, **kw: Any) -> None:
    """Run an MLPerf Inference scenario with the real LoadGen on each engine and precision, keep
    its logs, and say whether the run is VALID and, if not, which rule failed."""
    loadgen = {f.name: kw.pop(f.name) for f in dataclasses.fields(LoadgenOptions) if f.name in kw}
    execute(lambda **k: api.mlperf(scenario, loadgen=loadgen, **k), study(**kw))


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@options(STUDY_MODES)
@options(FLEET)
def fleet(nodes: str | None, runtime_env: Path | None, **kw: Any) -> None:
    """Run the study on every node of a Ray cluster; one combined report with outliers named."""
    from visionbench.ray_fleet.env import read_runtime_env

    kw = study(**kw, nodes=node_list(nodes), runtime_env=read_runtime_env(runtime_env))
    kw["output"] = kw.get("output") or api.default_output("fleet")
    summary = measure(lambda **k: api.fleet(**k, **kw), kw["output"], kw.get("threads"),
                       "every node's measurements so far are kept")
    _report_fleet(summary)
    if bad := [f"{n.name} ({n.status}: {n.reason})" for n in summary.fleet.nodes if n.reason]:
        raise VisionbenchError(f"some nodes failed: {', '.join(bad)}; every node's results are "
                               f"kept in {summary.dir}")


def _report_fleet(summary: Any) -> None:
    """The fleet's tables, every node's own report, then the fleet's."""
    tables.print_fleet(console, summary)
    for results in summary.runs.values():
        report_run(results)
    console.print("fleet report: " + ", ".join(str(p) for p in api.report_fleet(summary)))


@cli.command()
@options(STUDY)
@options(ENGINE)
@options(TIMING)
def profile(**kw: Any) -> None:
    """Where each engine and precision's batch-1 time goes, per operation, from the engine's own
    profiler (run --mode profile): every executed operation, its kernel and precision."""
    execute(api.profile, study(**kw))


@cli.command()
@options(STUDY)
@options(ENGINE)
@options(TIMING)
@options(PIPELINE)
def pipeline(**kw: Any) -> None:
    """The whole pipeline (run --mode pipeline): JPEG decode and preprocessing on worker threads,
    a bounded queue, batching, feed, inference, post-processing; per-stage times per image."""
    execute(api.pipeline, study(**kw))


@cli.command()
@options(STUDY)
@options(ENGINE)
@click.option("--batch-size", type=int, help="Images per inference call [default: 32].")
def accuracy(data: Path | None, **kw: Any) -> None:
    """Top-1/top-5 per engine and precision on labelled images, agreement with FP32, MLPerf's rule."""
    execute(lambda **k: api.accuracy(data, **k), study(**kw))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def resume(run_dir: Path) -> None:
    """Finish a run that stopped (Ctrl-C, SIGTERM, kill -9, a crash): measure only what its
    commands planned and it lacks or failed, on the same machine, and complete it."""
    results = measure(lambda **k: api.resume(run_dir, **k), run_dir, None)
    tables.print_results(console, results)
    console.print(f"results: {results.directory}/results.json")
    report_run(results)
    if results.status == "failed":
        raise VisionbenchError("some measurements failed; see the table above")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def show(run_dir: Path) -> None:
    """Print the tables of a finished (or interrupted) run again."""
    for note in api.recover(run_dir):
        console.print(note, markup=False)
    tables.print_results(console, api.load(run_dir))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--outlier-pct", type=float,
              help="Fleet runs: the outlier threshold in percent [default: the run's own, 10].")
def report(run_dir: Path, outlier_pct: float | None) -> None:
    """Write the study's two figures (PNG, SVG), summary.md and report.html into a run directory;
    for a fleet run, every node's report and the fleet's (fleet.md, fleet.html, figures)."""
    if api.is_fleet(run_dir):
        _report_fleet(api.fleet_summary(run_dir, outlier_pct))
    elif outlier_pct is not None:
        raise VisionbenchError(f"--outlier-pct is for fleet runs; {run_dir} is a single run")
    else:
        report_run(api.load(run_dir))


@cli.command("compare")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@options(COMPARE)
def compare_cmd(runs: tuple[Path, ...], baseline: Path | None, output: Path | None,
                run_noise: float | None, overwrite: bool) -> None:
    """Compare runs (machines, engines, versions) with a baseline: ratios and their significance."""
    cmp = api.compare(list(runs), baseline, None if run_noise is None else run_noise / 100)
    tables.print_comparison(console, cmp)
    out = output or Path("results") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    written = api.write_comparison(cmp, out, overwrite=overwrite)
    console.print("comparison: " + ", ".join(str(p) for p in written))


for command in [*machine.COMMANDS, *serving.COMMANDS]:
    cli.add_command(command)


def main() -> None:
    running.run(cli)
