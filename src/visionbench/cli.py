"""Command line: parse, call, print. Errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from visionbench import __version__
from visionbench.config import MLPERF_SHORT_SECONDS, RunConfig, parse_list
from visionbench.engines import DEFAULT_ENGINE, PRECISIONS, all_engines
from visionbench.errors import VisionbenchError
from visionbench.fleetsummary import FleetSummary
from visionbench.harness.timing import MODES
from visionbench.results import Results, RunStore
from visionbench.sysinfo import available_cpus, cpu_features, system_info

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough that the tables never wrap
    console = Console(width=140)


def default_output() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{socket.gethostname()}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="visionbench")
def cli() -> None:
    """Image-classification inference benchmarks: ResNet-50 v1.5 at FP32, BF16 and INT8."""


def _options(options: list) -> Callable:
    def apply(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


#: What to run and on what: shared by run and accuracy.
STUDY = [
    click.option("--engine", "engine", default=DEFAULT_ENGINE, show_default=True,
                 help="Engine name, comma list, or 'all' (every installed engine)."),
    click.option("--precision", help="Comma list of fp32, bf16, int8 [default: all three]."),
    click.option("--model", default="resnet50", show_default=True,
                 help="Built-in model (resnet50, resnet50-tiny, efficientnet-lite0), or a path to an "
                      "ONNX file or a TensorFlow model (.keras, .h5, .pb, SavedModel directory)."),
    click.option("--weights", type=click.Path(path_type=Path),
                 help="ResNet-50 weights: a torchvision checkpoint (.pth state_dict; every engine "
                      "runs it) or TensorFlow's own file (.keras, .h5, .pb, SavedModel directory)."),
    click.option("--input-name", help="Input tensor of a TensorFlow model file, if it cannot be inferred."),
    click.option("--output-name", help="Output (logits) tensor of a TensorFlow model file, if ambiguous."),
    click.option("--threads", type=int, help="Threads per engine [default: all available cores]."),
    click.option("--data", type=click.Path(path_type=Path),
                 help="Images: class folders named by WordNet id, or a folder with val_map.txt. "
                      "Calibrates INT8 on real images; with --accuracy, measures accuracy on them."),
    click.option("--labels", type=click.Path(path_type=Path),
                 help="Labels file ('filename label' lines) for a flat --data folder."),
    click.option("--limit", type=int, help="Use only the first N images of --data."),
    click.option("--calibration-data", type=click.Path(path_type=Path),
                 help="INT8 calibration images: a folder, or a list file (MLPerf cal_image_list form) "
                      "[default: a fixed-seed sample of --data, else synthetic]."),
    click.option("--calibration-samples", type=int, help="INT8 calibration samples [default: 300]."),
    click.option("--preprocess", help="Image preprocessing instead of the model's own: torchvision, "
                                      "mlperf or efficientnet-lite."),
    click.option("--allow-emulated", is_flag=True,
                 help="Measure a precision this CPU lacks natively, where the engine can emulate it."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights and inputs."),
    click.option("--output", type=click.Path(path_type=Path),
                 help="Run directory [default: results/<timestamp>-<hostname>; fleet: "
                      "results/<timestamp>-fleet]."),
]


#: Pinned instances: shared by run and sweep.
INSTANCES = [
    click.option("--instances", type=int,
                 help="Engine processes run at once, each pinned to its own cores; throughput is "
                      "their sum [default: one, in this process, unpinned]."),
    click.option("--cores-per-instance", type=int,
                 help="Physical cores per instance [default: the available cores / --instances]."),
    click.option("--layout", type=click.Choice(["throughput", "latency", "reference"]),
                 help="The reference scripts' instances: throughput = one per NUMA node with all "
                      "its cores; latency = 4 cores each, filling the machine; reference = each "
                      "mode its own."),
    click.option("--streams", type=int,
                 help="OpenVINO inference streams: the batch is split evenly over them and its parts "
                      "run in parallel [default: 1]."),
    click.option("--hint", type=click.Choice(["throughput", "latency"]),
                 help="OpenVINO performance hint; without --streams, OpenVINO chooses the streams "
                      "(recorded) [default: latency, 1 stream]."),
    click.option("--inter-op-threads", type=int,
                 help="ONNX Runtime inter-op threads (parallel execution mode when above 1) "
                      "[default: 1, sequential]."),
]


def _engines(engine: str) -> list[str]:
    if engine.strip().lower() == "all":
        engines = [n for n, cls in all_engines().items() if cls.installed()]
        if not engines:
            raise VisionbenchError("no engine is installed: pip install 'visionbench[all]'")
        return engines
    return parse_list(engine, tuple(all_engines()), "engine") or []


def _study(engine: str, precision: str | None, threads: int | None, output: Path | None,
           **kw: object) -> RunConfig:
    return RunConfig(
        engines=_engines(engine),
        precisions=parse_list(precision, PRECISIONS, "precision") or list(PRECISIONS),  # type: ignore[arg-type]
        precisions_explicit=precision is not None, engines_explicit=engine.strip().lower() != "all",
        threads=threads or available_cpus(), threads_explicit=threads is not None,
        output=output or default_output(), **kw,  # type: ignore[arg-type]
    )


def _execute(cfg: RunConfig, measure: Callable[..., RunStore] | None = None) -> None:
    """Measure (a study or sweep by default), print the tables, write the report."""
    from visionbench.report.console import ConsoleReporter, print_summary
    from visionbench.runner import run as run_study

    if cfg.threads > available_cpus():
        console.print(f"[yellow]note: --threads {cfg.threads} exceeds the "
                      f"{available_cpus()} CPUs available; threads will share cores[/]")
    try:
        with ConsoleReporter(console) as reporter:
            store = (measure or run_study)(cfg, reporter, sys.argv)
    except KeyboardInterrupt:
        print(f"visionbench: interrupted; measurements already made are kept in {cfg.output}",
              file=sys.stderr)
        sys.exit(130)
    print_summary(console, store.results)
    console.print(f"results: {store.dir}/results.json")
    _report(store.results, store.dir)
    if store.results.status == "failed":
        raise VisionbenchError("some measurements failed; see the table above")


#: How long and how often to time: shared by run and sweep.
TIMING = [
    click.option("--duration", type=float,
                 help="Seconds per timed repeat [default: 10 throughput, 5 latency]."),
    click.option("--iterations", type=int, help="Inferences per timed repeat (instead of --duration)."),
    click.option("--repeats", type=int, help="Independent timed repeats [default: 3]."),
    click.option("--warmup", type=int,
                 help="Warm-up inferences [default: 2 batches throughput, 20 latency]."),
    click.option("--quick", is_flag=True,
                 help="A smoke run in about a minute: throughput batch 16, short repeats."),
]


#: The study's own options: shared by run and fleet.
STUDY_MODES = [
    click.option("--mode", help="Comma list of throughput, latency [default: both]."),
    click.option("--accuracy", is_flag=True,
                 help="Also measure accuracy on --data at every precision."),
    click.option("--batch-size", type=int,
                 help="Throughput batch size [default: 116 for fp32 and int8, 80 for bf16]."),
]


@cli.command()
@_options(STUDY)
@_options(INSTANCES)
@_options(TIMING)
@_options(STUDY_MODES)
def run(mode: str | None, **kw: object) -> None:
    """Measure throughput and batch-1 latency per engine and precision."""
    _execute(_study(modes=parse_list(mode, MODES, "mode") or list(MODES), **kw))  # type: ignore[arg-type]


def _int_list(value: str, flag: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise VisionbenchError(f"{flag} takes a comma list of integers, got '{value}'") from None
    if not items:
        raise VisionbenchError(f"{flag} is empty")
    return sorted(set(items))


@cli.command()
@_options(STUDY)
@_options(INSTANCES)
@_options(TIMING)
@click.option("--batch-sizes", default="1,2,4,8,16,32,64,128", show_default=True,
              help="Comma list of batch sizes to measure.")
def sweep(batch_sizes: str, **kw: object) -> None:
    """Throughput and per-batch latency at each batch size, per engine and precision."""
    _execute(_study(modes=["throughput"], batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                    **kw))  # type: ignore[arg-type]


@cli.command()
@_options(STUDY)
@click.option("--budget", default="5m", show_default=True,
              help="Wall time for the whole search (e.g. 90s, 5m, 1h); one-off INT8 quantization "
                   "is not counted.")
@click.option("--max-latency-ms", type=float,
              help="Only settings whose p99 latency per call (one batch) stays within this bound.")
@click.option("--batch-sizes", help="Batch sizes to explore [default: 1,2,4,...,256, up to where "
                                    "throughput stops rising].")
@click.option("--batch-size", type=int,
              help="The default setting's batch size, that a winner must match or beat "
                   "[default: the study's, 116 or 80].")
def tune(budget: str, max_latency_ms: float | None, batch_sizes: str | None, **kw: object) -> None:
    """Search batch size x instances x threads (x OpenVINO streams) for the highest throughput
    per engine and precision, then re-measure the best few and the default before naming one."""
    from visionbench.tune import parse_budget
    from visionbench.tune import tune as run_tune

    seconds = parse_budget(budget)
    cfg = _study(batch_sizes=_int_list(batch_sizes, "--batch-sizes") if batch_sizes else None,
                 **kw)  # type: ignore[arg-type]
    _execute(cfg, lambda c, reporter, argv: run_tune(c, seconds, max_latency_ms, reporter, argv))


@cli.command()
@_options(STUDY)
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
@click.option("--duration", type=float, help="Minimum duration in seconds [default: MLPerf's 600].")
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
def mlperf(scenario: str, target_qps: float | None, target_latency_ms: float | None,
           samples_per_query: int | None, max_batch: int | None, short: bool,
           duration: float | None, min_queries: int | None, performance_samples: int | None,
           user_conf: Path | None, accuracy: bool, find_peak: bool, peak_steps: int,
           **kw: object) -> None:
    """Run an MLPerf Inference scenario with the real LoadGen on each engine and precision, keep
    its logs, and say whether the run is VALID and, if not, which rule failed."""
    from visionbench.mlperf import SCENARIOS, Options, run_mlperf

    names = {s.lower(): s for s in SCENARIOS}
    chosen = [names[s] for s in parse_list(scenario.lower(), tuple(names), "scenario") or []]

    for flag, v in (("--max-batch", max_batch), ("--samples-per-query", samples_per_query),
                    ("--min-queries", min_queries), ("--performance-samples", performance_samples),
                    ("--peak-steps", peak_steps)):
        if v is not None and v <= 0:
            raise VisionbenchError(f"{flag} must be a positive integer, got {v}")
    for flag, f in (("--target-qps", target_qps), ("--target-latency-ms", target_latency_ms),
                    ("--duration", duration)):
        if f is not None and not f > 0:
            raise VisionbenchError(f"{flag} must be positive, got {f}")
    opts = Options(chosen[0], target_qps, target_latency_ms, samples_per_query, max_batch,
                   duration, min_queries, user_conf, short, performance_samples, accuracy, find_peak,
                   peak_steps)
    _execute(_study(**kw),  # type: ignore[arg-type]
             lambda c, reporter, argv: run_mlperf(c, chosen, opts, reporter, argv))


def _runtime_env(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import json

    try:
        env = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VisionbenchError(f"--runtime-env {path} is not a readable JSON file: {e}") from None
    if not isinstance(env, dict):
        raise VisionbenchError(f"--runtime-env {path} must hold a JSON object (Ray's runtime_env)")
    return env


@cli.command()
@_options(STUDY)
@_options(INSTANCES)
@_options(TIMING)
@_options(STUDY_MODES)
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
def fleet(mode: str | None, address: str, nodes: str | None, sequential: bool,
          node_timeout: float | None, outlier_pct: float, runtime_env: Path | None,
          output: Path | None, **kw: object) -> None:
    """Run the study on every node of a Ray cluster; one combined report with outliers named."""
    from visionbench.fleetsummary import summarise
    from visionbench.report.console import ConsoleReporter
    from visionbench.report.fleet import print_fleet

    if node_timeout is not None and not node_timeout > 0:
        raise VisionbenchError(f"--node-timeout must be positive seconds, got {node_timeout:g}")
    if not 0 < outlier_pct < 100:
        raise VisionbenchError(f"--outlier-pct must be between 0 and 100, got {outlier_pct:g}")
    selectors = [n.strip() for n in nodes.split(",") if n.strip()] if nodes is not None else None
    if selectors == []:
        raise VisionbenchError("--nodes is empty")
    cfg = _study(modes=parse_list(mode, MODES, "mode") or list(MODES),  # type: ignore[arg-type]
                 output=output or Path("results") / f"{datetime.now():%Y%m%d-%H%M%S}-fleet", **kw)
    env = _runtime_env(runtime_env)
    try:
        from visionbench.fleet import FleetOptions, run_fleet
    except ImportError as e:
        raise VisionbenchError(f"visionbench fleet needs Ray ({e}): "
                               "pip install 'visionbench[fleet]'") from None
    opts = FleetOptions(address, selectors, not sequential, node_timeout, outlier_pct, env)
    try:
        with ConsoleReporter(console) as reporter:
            store = run_fleet(cfg, opts, reporter, sys.argv)
    except KeyboardInterrupt:
        print(f"visionbench: interrupted; every node's measurements so far are kept in {cfg.output}",
              file=sys.stderr)
        sys.exit(130)
    summary = summarise(store.dir)
    print_fleet(console, summary)
    _report_fleet(summary)
    bad = [f"{n.name} ({n.status})" for n in store.fleet.nodes if n.status != "complete"]
    if bad:
        raise VisionbenchError(f"some nodes failed: {', '.join(bad)}; every node's results are "
                               f"kept in {store.dir}")


def _report_fleet(summary: FleetSummary) -> None:
    """Every node's own report, then the fleet's."""
    from visionbench.report.fleet import write_fleet_report

    directory = summary.dir
    for name, results in summary.runs.items():
        node = next(n for n in summary.fleet.nodes if n.name == name)
        _report(results, directory / node.dir)
    try:
        paths = write_fleet_report(summary, directory)
    except OSError as e:
        raise VisionbenchError(f"cannot write the fleet report in {directory}: {e.strerror}") from e
    console.print("fleet report: " + ", ".join(str(p) for p in paths))


@cli.command()
@_options(STUDY)
@click.option("--batch-size", type=int, help="Images per inference call [default: 32].")
def accuracy(data: Path | None, **kw: object) -> None:
    """Top-1/top-5 per engine and precision on labelled images, agreement with FP32, MLPerf's rule."""
    if data is None:
        raise VisionbenchError("accuracy needs images: give --data DIR")
    _execute(_study(modes=[], accuracy=True, data=data, **kw))  # type: ignore[arg-type]


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def show(run_dir: Path) -> None:
    """Print the tables of a finished (or interrupted) run again."""
    from visionbench.report.console import print_summary
    from visionbench.results import load

    print_summary(console, load(run_dir))


def _report(results: Results, run_dir: Path) -> None:
    from visionbench.report import write_report

    try:
        paths = write_report(results, run_dir)
    except OSError as e:
        raise VisionbenchError(f"cannot write the report in {run_dir}: {e.strerror}") from e
    console.print("report: " + ", ".join(str(p) for p in paths))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--outlier-pct", type=float,
              help="Fleet runs: the outlier threshold in percent [default: the run's own, 10].")
def report(run_dir: Path, outlier_pct: float | None) -> None:
    """Write the study's two figures (PNG, SVG), summary.md and report.html into a run directory;
    for a fleet run, every node's report and the fleet's (fleet.md, fleet.html, figures)."""
    from visionbench.fleetsummary import is_fleet
    from visionbench.results import load

    if is_fleet(run_dir):
        from visionbench.fleetsummary import summarise
        from visionbench.report.fleet import print_fleet

        summary = summarise(run_dir, outlier_pct)
        print_fleet(console, summary)
        _report_fleet(summary)
    else:
        if outlier_pct is not None:
            raise VisionbenchError(f"--outlier-pct is for fleet runs; {run_dir} is a single run")
        _report(load(run_dir), run_dir)


@cli.command("compare")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path),
              help="The run the others are compared with [default: the first RUN].")
@click.option("--output", type=click.Path(path_type=Path),
              help="Directory for compare.html/.md/.json and the figures "
                   "[default: results/compare-<timestamp>].")
def compare_cmd(runs: tuple[Path, ...], baseline: Path | None, output: Path | None) -> None:
    """Compare runs (machines, engines, versions) with a baseline: ratios and their significance."""
    from visionbench.compare import compare
    from visionbench.report.comparison import print_comparison, write_comparison

    cmp = compare(list(runs), baseline)
    print_comparison(console, cmp)
    out = output or Path("results") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        paths = write_comparison(cmp, out)
    except OSError as e:
        raise VisionbenchError(f"cannot write the comparison in {out}: {e.strerror}") from e
    console.print("comparison: " + ", ".join(str(p) for p in paths))


@cli.command()
def sysinfo() -> None:
    """Print the system facts that every run records."""
    t = Table(show_header=False, title="System")
    for k, v in system_info().as_dict().items():
        t.add_row(k, " ".join(v) if isinstance(v, list) else str(v))
    console.print(t)


@cli.command()
def engines() -> None:
    """List engines, their versions, and per precision whether this CPU runs it natively."""
    cpu = cpu_features()
    t = Table(title="Engines on this machine")
    for col in ("engine", "installed", "versions", *PRECISIONS):
        t.add_column(col)
    reasons: list[str] = []
    for name, cls in all_engines().items():
        if not cls.installed():
            t.add_row(name, f"no: pip install 'visionbench[{cls.extra}]'", "", "", "", "")
            continue
        e = cls()
        cells = []
        for p in PRECISIONS:
            s = e.support(p, cpu)
            if s.reason and s.reason not in reasons:
                reasons.append(s.reason)
            cells.append(s.status + (f" [{reasons.index(s.reason) + 1}]" if s.reason else ""))
        versions = ", ".join(f"{k} {v}" for k, v in e.versions().items())
        t.add_row(name, "yes", versions, *cells)
    console.print(t)
    for i, text in enumerate(reasons, 1):
        console.print(f"[{i}] {text}", markup=False, highlight=False)


@cli.command()
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="Where to write the ONNX file.")
@click.option("--model", default="resnet50", show_default=True, help="Built-in model name.")
@click.option("--weights", type=click.Path(path_type=Path),
              help="A torchvision ResNet-50 checkpoint to export with (instead of seeded weights).")
@click.option("--seed", type=int, default=0, show_default=True)
def export(output: Path, model: str, weights: Path | None, seed: int) -> None:
    """Write the built-in model as ONNX, so other tools and engines run the very same file."""
    from visionbench.fsutil import atomic_write_bytes
    from visionbench.models import BUILTIN, BUILTIN_NAMES, build_builtin, efficientnet, from_checkpoint

    if model not in BUILTIN_NAMES:
        raise VisionbenchError(f"unknown built-in model '{model}'; choose from {', '.join(BUILTIN_NAMES)}")
    if weights is not None and model != "resnet50":
        raise VisionbenchError("--weights is a ResNet-50 checkpoint: use it with --model resnet50")
    if weights is not None:
        src = from_checkpoint(weights)
    elif model in BUILTIN:
        src = build_builtin(model, seed)
    else:
        src = efficientnet.build()
    try:
        atomic_write_bytes(output, src.read_bytes())
    except OSError as e:
        raise VisionbenchError(f"cannot write {output}: {e.strerror}") from e
    console.print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        print("visionbench: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("visionbench: interrupted; measurements already made are kept", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:
        print(f"visionbench: error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except VisionbenchError as e:
        print(f"visionbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)

