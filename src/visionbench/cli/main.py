"""Command line: parse, call the API, print. Errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from visionbench import api
from visionbench.cli import tables
from visionbench.cli.options import ENGINE, INSTANCES, METHOD, STUDY, STUDY_MODES, TIMING, options, study
from visionbench.cli.progress import ConsoleReporter
from visionbench.config import MLPERF_SHORT_SECONDS
from visionbench.errors import Terminated, VisionbenchError
from visionbench.results import Results
from visionbench.sysinfo import available_cpus
from visionbench.version import __version__

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough that the tables never wrap
    console = Console(width=140)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="visionbench")
def cli() -> None:
    """Image-classification inference benchmarks: ResNet-50 v1.5 at FP32, BF16 and INT8."""


def _measure(call: Callable[..., Any], output: Path, threads: int | None,
             kept: str = "measurements already made are kept") -> Any:
    """Run ``call(reporter=..., command=...)`` under live progress; Ctrl-C keeps what was measured."""
    if threads is not None and threads > available_cpus():
        console.print(f"[yellow]note: --threads {threads} exceeds the {available_cpus()} CPUs "
                      "available; threads will share cores[/]")
    try:
        with ConsoleReporter(console) as reporter:
            return call(reporter=reporter, command=sys.argv)
    except KeyboardInterrupt as e:
        print(f"visionbench: {_stopped(e)}; {kept} in {output}", file=sys.stderr)
        sys.exit(_exit_code(e))


def _stopped(e: KeyboardInterrupt) -> str:
    if isinstance(e, Terminated):
        return f"stopped by {signal.Signals(e.signum).name}"
    return "interrupted"


def _exit_code(e: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal's number for SIGTERM (143) and SIGHUP (129)."""
    return 128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _execute(call: Callable[..., Results], kw: dict[str, Any]) -> None:
    """Measure, print the tables, write the report; a failed measurement fails the command."""
    kw["output"] = kw.get("output") or api.default_output()
    results = _measure(lambda **k: call(**k, **kw), kw["output"], kw.get("threads"))
    tables.print_results(console, results)
    console.print(f"results: {results.directory}/results.json")
    _report(results)
    if results.status == "failed":
        raise VisionbenchError("some measurements failed; see the table above")


def _report(results: Results) -> None:
    console.print("report: " + ", ".join(str(p) for p in api.report(results)))


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@options(STUDY_MODES)
def run(**kw: Any) -> None:
    """Measure throughput and batch-1 latency per engine and precision."""
    _execute(api.run, study(**kw))


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
                                ("--input-name", "input_name", None),
                                ("--output-name", "output_name", None),
                                ("--accuracy", "accuracy", False)):
        if kw.pop(name, default) not in (default, None, False):
            raise VisionbenchError(f"{flag} is for visionbench run; the suite's models are its "
                                   "--workloads")
    _execute(lambda **k: api.suite(workloads, **k), study(**kw))


def _int_list(value: str, flag: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise VisionbenchError(f"{flag} takes a comma list of integers, got '{value}'") from None
    if not items:
        raise VisionbenchError(f"{flag} is empty")
    return sorted(set(items))


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128", show_default=True,
              help="Comma list of batch sizes to measure.")
def sweep(batch_sizes: str, **kw: Any) -> None:
    """Throughput and per-batch latency at each batch size, per engine and precision."""
    sizes = _int_list(batch_sizes, "--batch-sizes")
    _execute(lambda **k: api.sweep(sizes, **k), study(**kw))


@cli.command()
@options(STUDY)
@options(ENGINE)
@click.option("--budget", default="10m", show_default=True,
              help="Wall time for the whole search (e.g. 90s, 5m, 1h); one-off INT8 quantization "
                   "is not counted.")
@click.option("--max-latency-ms", type=float,
              help="Only settings whose p99 latency per call (one batch) stays within this bound.")
@click.option("--batch-sizes", help="Batch sizes to explore [default: 1,2,4,...,256, up to where "
                                    "throughput stops rising].")
@click.option("--batch-size", type=int,
              help="The default setting's batch size, that a winner must match or beat "
                   "[default: the study's, 116 or 80].")
def tune(budget: str, max_latency_ms: float | None, batch_sizes: str | None, **kw: Any) -> None:
    """Search batch size x instances x threads (x OpenVINO streams and requests) for the highest
    throughput per engine and precision, starting from the engine's own configuration, then
    confirm the best few beside it round by round before naming one."""
    sizes = _int_list(batch_sizes, "--batch-sizes") if batch_sizes else None
    _execute(lambda **k: api.tune(budget, max_latency_ms=max_latency_ms, batch_sizes=sizes, **k),
             study(**kw))


#: mlperf's own options (``scenarios.mlperf.Options``' fields).
LOADGEN = ("target_qps", "target_latency_ms", "samples_per_query", "max_batch", "short",
           "duration_s", "min_queries", "performance_samples", "user_conf", "accuracy", "find_peak",
           "peak_steps")


@cli.command()
@options(STUDY)
@options(ENGINE)
@METHOD
@click.option("--scenario", required=True,
              help="MLPerf Inference scenario(s) LoadGen drives: SingleStream, MultiStream, Server, "
                   "Offline (a comma list, or all).")
@click.option("--target-qps", type=float,
              help="Server: queries per second LoadGen sends [default: half the throughput measured "
                   "before the run]; Offline: the expected throughput [default: measured].")
@click.option("--target-latency-ms", type=float,
              help="Server's latency bound at its percentile [default: MLPerf's 15 ms at p99].")
@click.option("--samples-per-query", type=int, help="MultiStream's query size [default: MLPerf's 8].")
@click.option("--max-batch", type=int,
              help="Largest batch the system under test forms from waiting samples "
                   "[default: 1 SingleStream, 8 MultiStream and Server, 32 Offline].")
@click.option("--short", is_flag=True,
              help=f"A quick run: {MLPERF_SHORT_SECONDS:g} s and few queries, marked not compliant "
                   "(MLPerf requires 600 s).")
@click.option("--duration", "duration_s", type=float,
              help="Minimum duration in seconds [default: MLPerf's 600].")
@click.option("--min-queries", type=int, help="Minimum query count [default: MLPerf's].")
@click.option("--performance-samples", type=int,
              help="Samples held in memory [default: MLPerf's 1024, or the images of --data].")
@click.option("--user-conf", type=click.Path(path_type=Path),
              help="A LoadGen user.conf (resnet50.<Scenario>.<key> = value), applied over MLPerf's rules.")
@click.option("--accuracy", is_flag=True,
              help="LoadGen's accuracy mode on --data: every image once, top-1 from LoadGen's log.")
@click.option("--find-peak", is_flag=True,
              help="Server: bisect for the highest QPS that keeps the latency bound (short runs), "
                   "then run it with the full settings.")
@click.option("--peak-steps", type=int, default=6, show_default=True,
              help="--find-peak's bisection runs (each 10 s, or --duration if shorter).")
def mlperf(scenario: str, **kw: Any) -> None:
    """Run an MLPerf Inference scenario with the real LoadGen on each engine and precision, keep
    its logs, and say whether the run is VALID and, if not, which rule failed."""
    loadgen = {k: kw.pop(k) for k in LOADGEN}
    _execute(lambda **k: api.mlperf(scenario, loadgen=loadgen, **k), study(**kw))


@cli.command()
@options(STUDY)
@options(INSTANCES)
@options(TIMING)
@options(STUDY_MODES)
@click.option("--address", default="auto", show_default=True,
              help="The Ray cluster: auto (RAY_ADDRESS, else the cluster started on this machine), "
                   "HOST:PORT of its head, or ray://HOST:10001 (Ray Client).")
@click.option("--nodes", help="Comma list of nodes to run on: node ids (or their first 6+ characters), "
                              "hostnames, IP addresses, Ray resource names or labels key=value "
                              "[default: every alive node with CPUs].")
@click.option("--sequential/--concurrent", default=True, show_default=True,
              help="One node after another (nodes sharing hardware do not disturb each other), or "
                   "all at once with each measurement's windows started together (the cluster's "
                   "aggregate images/s).")
@click.option("--node-timeout", type=float,
              help="Seconds a node may take for its whole study before it is stopped and reported "
                   "as timed out [default: no limit].")
@click.option("--outlier-pct", type=float, default=10.0, show_default=True,
              help="A node slower than the fleet median by more than this many percent is an outlier.")
@click.option("--runtime-env", type=click.Path(path_type=Path),
              help="A JSON file with Ray's runtime_env for every node's task (e.g. pip packages).")
def fleet(nodes: str | None, sequential: bool, runtime_env: Path | None, **kw: Any) -> None:
    """Run the study on every node of a Ray cluster; one combined report with outliers named."""
    from visionbench.ray_fleet.env import read_runtime_env

    selectors = [n.strip() for n in nodes.split(",") if n.strip()] if nodes is not None else None
    kw = study(**kw, nodes=selectors, concurrent=not sequential,
               runtime_env=read_runtime_env(runtime_env))
    kw["output"] = kw.get("output") or api.default_output("fleet")
    summary = _measure(lambda **k: api.fleet(**k, **kw), kw["output"], kw.get("threads"),
                       "every node's measurements so far are kept")
    _report_fleet(summary)
    bad = [f"{n.name} ({n.status})" for n in summary.fleet.nodes if n.status != "complete"]
    if bad:
        raise VisionbenchError(f"some nodes failed: {', '.join(bad)}; every node's results are "
                               f"kept in {summary.dir}")


def _report_fleet(summary: Any) -> None:
    """The fleet's tables, every node's own report, then the fleet's."""
    tables.print_fleet(console, summary)
    for results in summary.runs.values():
        _report(results)
    console.print("fleet report: " + ", ".join(str(p) for p in api.report_fleet(summary)))


@cli.command()
@options(STUDY)
@options(ENGINE)
@click.option("--batch-size", type=int, help="Images per inference call [default: 32].")
def accuracy(data: Path | None, **kw: Any) -> None:
    """Top-1/top-5 per engine and precision on labelled images, agreement with FP32, MLPerf's rule."""
    _execute(lambda **k: api.accuracy(data, **k), study(**kw))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def resume(run_dir: Path) -> None:
    """Finish a run that stopped (Ctrl-C, SIGTERM, kill -9, a crash): measure only what its
    commands planned and it lacks or failed, on the same machine, and complete it."""
    results = _measure(lambda **k: api.resume(run_dir, **k), run_dir, None)
    tables.print_results(console, results)
    console.print(f"results: {results.directory}/results.json")
    _report(results)
    if results.status == "failed":
        raise VisionbenchError("some measurements failed; see the table above")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def show(run_dir: Path) -> None:
    """Print the tables of a finished (or interrupted) run again."""
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
        _report(api.load(run_dir))


@cli.command("compare")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path),
              help="The run the others are compared with [default: the first RUN].")
@click.option("--output", type=click.Path(path_type=Path),
              help="Directory for compare.html/.md/.json and the figures "
                   "[default: results/compare-<timestamp>].")
def compare_cmd(runs: tuple[Path, ...], baseline: Path | None, output: Path | None) -> None:
    """Compare runs (machines, engines, versions) with a baseline: ratios and their significance."""
    cmp = api.compare(list(runs), baseline)
    tables.print_comparison(console, cmp)
    out = output or Path("results") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    console.print("comparison: " + ", ".join(str(p) for p in api.write_comparison(cmp, out)))


@cli.command()
def sysinfo() -> None:
    """Print the system facts that every run records."""
    tables.print_system(console, api.system())


@cli.command()
def engines() -> None:
    """List engines, their versions, and per precision whether this CPU runs it natively."""
    tables.print_engines(console, api.list_engines())


@cli.command()
def models() -> None:
    """List the built-in models: task, parameters, GFLOPs, input, weights, and which installed
    engines can run each."""
    tables.print_models(console, api.list_models(), api.list_engines())


@cli.command()
@click.option("--clear", is_flag=True, help="Empty the cache (models are built again on next use).")
def cache(clear: bool) -> None:
    """List the cached models, INT8 models and exports (size, what, when made, whole or damaged),
    or empty the cache."""
    if clear:
        console.print(f"cleared {api.cache_dir()}: {api.clear_cache() / 2**20:.1f} MiB freed",
                      markup=False)
        return
    tables.print_cache(console, str(api.cache_dir()), api.cache_entries())


@cli.command()
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="Where to write the ONNX file.")
@click.option("--model", default="resnet50", show_default=True,
              help="Built-in model name (`visionbench models` lists them).")
@click.option("--weights", type=click.Path(path_type=Path),
              help="A torchvision ResNet-50 checkpoint to export with (instead of seeded weights).")
@click.option("--seed", type=int, default=0, show_default=True)
def export(output: Path, model: str, weights: Path | None, seed: int) -> None:
    """Write a built-in model as ONNX, so other tools and engines run the very same file."""
    path = api.export(model, output, weights=weights, seed=seed)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", markup=False)


def main() -> None:
    # What timeout, systemd, Kubernetes, Slurm and Ray send to stop a job, and a closed terminal:
    # handled as Ctrl-C is, so that a run stopped this way is marked so and keeps its results.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt (ours: SIGTERM, SIGHUP) outside a measurement into Abort
        cause = e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else KeyboardInterrupt()
        print(f"visionbench: {_stopped(cause) if e.__cause__ else 'aborted'}", file=sys.stderr)
        sys.exit(_exit_code(cause))
    except KeyboardInterrupt as e:
        print(f"visionbench: {_stopped(e)}; measurements already made are kept", file=sys.stderr)
        sys.exit(_exit_code(e))
    except click.ClickException as e:
        print(f"visionbench: error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except VisionbenchError as e:
        print(f"visionbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
