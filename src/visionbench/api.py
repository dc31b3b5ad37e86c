"""The public Python API: what every command does, callable from a notebook or another tool.

    import visionbench
    r = visionbench.run(model="resnet50-tiny", engines=["onnxruntime"], precisions=["fp32"],
                        modes=["latency"], iterations=20, output="run-x")
    r.measurements[0].latency.p50_ms

Each measuring function takes the study's options as keyword arguments (``study_config`` lists
them; the same names as the command line's flags, in the plural where they take lists), writes
its run directory as it measures (results.json, results.csv, raw latencies) and returns the typed
results, whose ``directory`` is that run directory. ``report`` writes the figures and pages of a
run. Bad input raises ``VisionbenchError`` with the one line the command line prints."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionbench.config import RunConfig, parse_list
from visionbench.engines import PRECISIONS, all_engines, all_options
from visionbench.errors import VisionbenchError
from visionbench.fsutil import failure, write_ready
from visionbench.machine import TUNE_SAVED, Change, Check, MachineState
from visionbench.reporter import Reporter
from visionbench.results import Results
from visionbench.results import load as _load
from visionbench.settings import DEFAULT_ENGINE, METHODS, MODES, OUTLIER_PCT, Fleet, Tune
from visionbench.sysinfo import available_cpus

if TYPE_CHECKING:
    from visionbench.cache import Entry as CacheEntry
    from visionbench.engines import EngineInfo
    from visionbench.harness.peak import Peak
    from visionbench.models.registry import Entry
    from visionbench.results.compare import Comparison
    from visionbench.results.fleet import FleetSummary
    from visionbench.scenarios.plan import DryRun

Names = str | Sequence[str] | None


def default_output(suffix: str | None = None) -> Path:
    """results/<timestamp>-<hostname> (or -<suffix>)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{suffix or socket.gethostname()}"


def _names(value: Names, allowed: tuple[str, ...], what: str) -> list[str] | None:
    """A comma list or a sequence, checked against ``allowed``; ``all`` means every one."""
    if value is None:
        return None
    if not isinstance(value, str) and len(value) == 0:
        return []
    return parse_list(value if isinstance(value, str) else ",".join(value), allowed, what)


def _engines(value: Names) -> tuple[list[str], bool]:
    """The engines asked for, and whether the user named them (``all``: every installed one)."""
    if value is None:
        value = DEFAULT_ENGINE
    text = value if isinstance(value, str) else ",".join(value)
    if text.strip().lower() == "all":
        installed = [n for n, cls in all_engines().items() if cls.installed()]
        if not installed:
            raise VisionbenchError("no engine is installed: pip install 'visionbench[all]'")
        return installed, False
    return _names(text, tuple(all_engines()), "engine") or [], True


def study_config(*, engines: Names = None, precisions: Names = None, modes: Names = None,
                 methods: Names = None, threads: int | None = None,
                 output: str | Path | None = None, **options: Any) -> RunConfig:
    """A checked ``RunConfig`` from the command line's options by name. ``engines``: names, a comma
    list or ``all`` (default: OpenVINO); ``precisions`` and ``modes`` likewise (default: all; a
    named precision this CPU cannot run is an error, a default one is recorded as skipped);
    ``methods``: reference, engine or both (default: both; only the reference, which they then
    configure, where engine options are given); ``threads`` default to the available cores;
    ``output`` to results/<timestamp>-<host>. The
    other options are ``RunConfig``'s fields (``model``, ``batch_size``, ``duration``,
    ``iterations``, ``repeats``, ``warmup``, ``instances``, ``data``, ...) and the engines' own
    options by name (``streams``, ``hint``, ``inter_op_threads``: ``engines.all_options()``)."""
    names, explicit = _engines(engines)
    known = all_options()
    given = {k: options.pop(k) for k in list(options) if k in known}
    engine_options = {**options.pop("engine_options", {}),
                      **{k: v for k, v in given.items() if v is not None}}
    for key in ("weights", "data", "labels", "calibration_data"):
        if isinstance(options.get(key), str):
            options[key] = Path(options[key])
    chosen = (_names(modes, (*MODES, "cold", "profile", "pipeline"), "mode") if modes is not None
              else list(MODES))
    try:
        return RunConfig.of(
            engines=names, engines_explicit=explicit,
            precisions=_names(precisions, PRECISIONS, "precision") or list(PRECISIONS),  # type: ignore[arg-type]
            precisions_explicit=precisions is not None,
            modes=[m for m in chosen if m in MODES], cold="cold" in chosen,  # type: ignore[arg-type]
            profile=bool(options.pop("profile", False)) or "profile" in chosen,
            pipeline="pipeline" in chosen,
            methods=_names(methods, METHODS, "method") if methods is not None
            else ["reference"] if engine_options else list(METHODS),
            threads=threads or available_cpus(), threads_explicit=threads is not None,
            output=Path(output) if output is not None else default_output(),
            engine_options=engine_options, **options,
        )
    except TypeError as e:  # an option RunConfig does not have
        raise VisionbenchError(str(e).replace("RunConfig.of()", "study option")) from None


def _command(command: Sequence[str] | None, name: str, options: dict[str, Any]) -> list[str]:
    """What a run records as its command: the command line's, or the API call."""
    if command is not None:
        return list(command)
    return [f"visionbench.{name}(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"]


def run(*, reporter: Reporter | None = None, command: Sequence[str] | None = None,
        **options: Any) -> Results:
    """The study: throughput (reference batch) and batch-1 latency per engine and precision; with
    ``batch_sizes``, a sweep. ``accuracy=True`` with ``data`` adds accuracy."""
    from visionbench.scenarios.study import run as run_study

    cfg = study_config(**options)
    return run_study(cfg, reporter or Reporter(), _command(command, "run", options)).results


def profile(*, reporter: Reporter | None = None, command: Sequence[str] | None = None,
            **options: Any) -> Results:
    """Where each engine and precision's batch-1 time goes, per operation, from the engine's own
    profiler: ``run`` with ``modes="profile"`` (the records under ``Results.profiles``)."""
    return run(reporter=reporter, command=command or _command(None, "profile", options),
               **{**options, "modes": "profile"})


def pipeline(*, reporter: Reporter | None = None, command: Sequence[str] | None = None,
             **options: Any) -> Results:
    """The whole pipeline per engine and precision (JPEG decode and preprocessing on
    ``pipeline_threads`` workers, a bounded queue, batching, feed, inference, post-processing),
    each stage timed per image, beside inference alone in the same session: ``run`` with
    ``modes="pipeline"`` (the records under ``Results.pipelines``)."""
    return run(reporter=reporter, command=command or _command(None, "pipeline", options),
               **{**options, "modes": "pipeline"})


def serve(model: str = "resnet50", *, host: str = "127.0.0.1", http_port: int = 0,
          grpc_port: int = 0, ready_file: str | Path | None = None,
          announce: Callable[[dict[str, Any]], None] = print,
          address: str | None = None, nodes: Sequence[str] | None = None,
          warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
          reporter: Reporter | None = None, **options: Any) -> str:
    """Serve ``model`` (one engine and precision: ``engines``, ``precisions``; the study's model
    options) behind KServe's Python model server over HTTP and gRPC, on ``host`` (loopback
    unless given), until SIGINT, SIGTERM or SIGHUP; ``announce`` gets the URLs and
    configuration once it listens (also written to ``ready_file``). Returns the name of the
    signal that stopped it. ``address``: a Ray cluster instead, a server on each of its
    ``nodes`` (default: every alive node with CPUs) on the node's own address, with the node's
    CPUs as threads; ``announce`` gets them all (``servers``, and the lists ``http`` and
    ``grpc`` that ``loadtest`` takes); ``warn`` hears of a server that stops while the others
    go on."""
    from visionbench.serving.host import host as prepare
    from visionbench.serving.host import one_engine

    for port, name in ((http_port, "--http-port"), (grpc_port, "--grpc-port")):
        if not 0 <= port <= 65535:
            raise VisionbenchError(f"{name} takes 0 (any free port) to 65535, got {port}")
    cfg = study_config(model=model, modes="throughput", **{"batch_size": 1, **options})
    out = Path(ready_file) if ready_file is not None else None
    if nodes is not None and address is None:
        raise VisionbenchError("--nodes chooses a cluster's nodes: give --address too")
    if address is not None:
        if host != "127.0.0.1":
            raise VisionbenchError("--host and --address: on a cluster each server listens on "
                                   "its node's own address")
        if nodes is not None and not list(nodes):
            raise VisionbenchError("--nodes is empty")
        engine, precision = one_engine(cfg)
        try:
            from visionbench.ray_fleet.servers import serve_on
        except ImportError as e:
            raise VisionbenchError(f"serve --address needs Ray ({e}): "
                                   "pip install 'visionbench[fleet]'") from None
        ports = {k: v for k, v in (("http_port", http_port), ("grpc_port", grpc_port)) if v}
        return serve_on(address, list(nodes) if nodes is not None else None, model,
                        {**options, **ports, "engines": [engine], "precisions": [precision]},
                        announce, warn, reporter or Reporter(),
                        (lambda facts: write_ready(out, facts)) if out else None)
    from visionbench.serving.server import serve as run_server

    hosted = prepare(cfg, reporter or Reporter())
    return run_server(hosted, host, http_port, grpc_port, out, announce)


def loadtest(url: str | Sequence[str], model: str, *, concurrency: Sequence[int] = (1, 2, 4, 8),
             duration: float = 5.0, warmup: float = 1.0, timeout: float = 30.0,
             input_shape: Sequence[int] | None = None, output: str | Path | None = None,
             overwrite: bool = False, append: bool = False,
             server_facts: str | Path | None = None, ceiling: str | None = None,
             rates: Sequence[float] | None = None, connections: int = 32,
             target_latency_ms: float | None = None, min_queries: int | None = None,
             jpeg: bool = False, data: str | Path | None = None,
             on_point: Callable[[Any], None] | None = None,
             command: Sequence[str] | None = None) -> Results:
    """A closed-loop concurrency sweep of ``model`` on the KServe v2 server at ``url``
    (``http://HOST:PORT`` or ``grpc://HOST:PORT``; several: loaded together, each by its own
    users, as a cluster's servers from ``serve(address=...)``) into a run directory: per point throughput,
    latency percentiles with intervals, errors by kind and the client's CPU, the knee marked
    (the records under ``Results.loadtest``). ``server_facts``: a file ``serve`` wrote with
    ``ready_file``, recorded with the points; ``ceiling``: the server's no-op model, swept first
    (the generator's ceiling: points above half of it are flagged). ``rates``: instead of the
    sweep, LoadGen's Server scenario at each rate (queries/s; Poisson arrivals) for at least
    ``duration`` seconds and ``min_queries``, on ``connections`` connections, judged against
    ``target_latency_ms`` at p99 (default: MLPerf's 15 ms): LoadGen's VALID or the rules broken.
    ``jpeg``: send JPEG files (``data``: a file or a folder of them; default the shipped photos)
    to a model that decodes them on the server (serve's ``MODEL-jpeg``)."""
    import json

    from visionbench.data import decode
    from visionbench.data.images import image_files
    from visionbench.scenarios.mlperf.settings import Options
    from visionbench.serving.loadtest import Plan
    from visionbench.serving.loadtest import loadtest as sweep

    facts = None
    if server_facts is not None:
        try:
            facts = json.loads(Path(server_facts).read_text())
        except (OSError, ValueError) as e:
            raise VisionbenchError(f"--server-facts {server_facts}: cannot read it as JSON "
                                   f"({e})") from e
        if not isinstance(facts, dict):
            raise VisionbenchError(f"--server-facts {server_facts}: not a JSON object")
    if data is not None and not jpeg:
        raise VisionbenchError("--data gives the JPEG files --jpeg sends: give --jpeg too")
    jpegs = None
    if jpeg:
        folder = Path(data) if data is not None else None
        if folder is not None and not folder.exists():
            raise VisionbenchError(f"--data {folder}: no such file or folder")
        paths = (decode.photos() if folder is None else image_files(folder) if folder.is_dir()
                 else [folder])
        jpegs = decode.read_jpegs(paths, decode.best())
    out = Path(output) if output is not None else default_output("loadtest")
    existing = "overwrite" if overwrite else "append" if append else "refuse"
    gen = Options("Server", target_latency_ms=target_latency_ms, duration_s=duration,
                  min_queries=min_queries)
    gen.check()
    plan = Plan(list(concurrency), duration, warmup, timeout_s=timeout,
                input_shape=tuple(input_shape) if input_shape else None, ceiling=ceiling,
                rates=list(rates) if rates is not None else None, connections=connections,
                loadgen=gen, jpegs=jpegs)
    urls = [url] if isinstance(url, str) else list(url)
    opts = {"url": urls, "model": model, "concurrency": list(concurrency), "duration": duration}
    return sweep(urls, model, plan, out, existing, _command(command, "loadtest", opts), facts,
                 on_point or (lambda p: None))


def dry_run(**options: Any) -> DryRun:
    """What ``run`` with these options would measure and where, doing none of it: the options
    and the output folder checked (nothing created, moved aside or put back), each engine's
    verdict on each precision here, the planned measurements. The model is neither built nor
    read: its own checks come when the run starts."""
    from visionbench.scenarios.plan import dry_run as plan

    return plan(study_config(**options))


def sweep(batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128), *,
          reporter: Reporter | None = None, command: Sequence[str] | None = None,
          **options: Any) -> Results:
    """Throughput and per-batch latency at each batch size, per engine and precision (the
    reference method unless ``methods`` says otherwise)."""
    options.setdefault("methods", ["reference"])
    return run(reporter=reporter, command=command or _command(None, "sweep", options),
               modes=["throughput"], batch_sizes=sorted(set(batch_sizes)), **options)


def suite(workloads: Names = "all", *, reporter: Reporter | None = None,
          command: Sequence[str] | None = None, **options: Any) -> Results:
    """The vision workload suite: the study on each workload (``"all"``: every one of the suite,
    or a list of registered models), each at its own throughput batch and at batch 1, every
    precision, each lower precision with its fidelity to FP32; one run of kind ``suite``. The
    reference method unless ``methods`` says otherwise."""
    from visionbench.scenarios import suite as suite_scenario

    names = suite_scenario.workloads(workloads if not isinstance(workloads, (list, tuple))
                                     else list(workloads))
    options.setdefault("methods", ["reference"])
    cfg = study_config(workloads=names, **options)
    return suite_scenario.run(cfg, reporter or Reporter(),
                              _command(command, "suite", {"workloads": workloads, **options})).results


def tune(budget: str | float = "10m", *, max_latency_ms: float | None = None,
         reporter: Reporter | None = None, command: Sequence[str] | None = None,
         **options: Any) -> Results:
    """The fastest setting per engine and precision within ``budget`` (seconds, or '5m', '90s')."""
    from visionbench.scenarios.tune import tune as run_tune

    section = Tune(str(budget), max_latency_ms)
    cfg = study_config(**options)
    return run_tune(cfg, section.seconds, section.max_latency_ms, reporter or Reporter(),
                    _command(command, "tune", options)).results


def accuracy(data: str | Path | None = None, *, reporter: Reporter | None = None,
             command: Sequence[str] | None = None, **options: Any) -> Results:
    """Top-1/top-5 per engine and precision on labelled images, agreement with FP32."""
    if data is None:
        raise VisionbenchError("accuracy needs images: give --data DIR")
    cfg = study_config(modes=[], accuracy=True, data=data, **options)
    from visionbench.scenarios.study import run as run_study

    return run_study(cfg, reporter or Reporter(), _command(command, "accuracy", options)).results


def mlperf(scenarios: Names, *, reporter: Reporter | None = None,
           command: Sequence[str] | None = None, loadgen: dict[str, Any] | None = None,
           **options: Any) -> Results:
    """MLPerf Inference scenarios through the real LoadGen. ``scenarios``: names, a comma list or
    ``all``; ``loadgen``: ``scenarios.mlperf.Options`` fields (target_qps, short, find_peak...)."""
    from visionbench.scenarios.mlperf import SCENARIOS, Options, run_mlperf

    by_lower = {s.lower(): s for s in SCENARIOS}
    text = scenarios if isinstance(scenarios, str) else ",".join(scenarios or [])
    chosen = [by_lower[s] for s in parse_list(text.lower(), tuple(by_lower), "scenario") or []]
    try:
        opts = Options(chosen[0], **(loadgen or {}))
    except TypeError as e:
        raise VisionbenchError(str(e).replace("Options.__init__()", "LoadGen option")) from None
    opts.check()
    options.setdefault("methods", ["reference"])
    cfg = study_config(**options)
    return run_mlperf(cfg, chosen, opts, reporter or Reporter(),
                      _command(command, "mlperf", options)).results


def fleet(*, address: str = "auto", nodes: Sequence[str] | None = None, concurrent: bool = False,
          node_timeout: float | None = None, outlier_pct: float | None = None,
          runtime_env: dict[str, Any] | None = None, reporter: Reporter | None = None,
          command: Sequence[str] | None = None, **options: Any) -> FleetSummary:
    """The study on every node of a Ray cluster; the fleet's summary (each node's results under
    ``nodes/``, medians and outliers)."""
    try:
        from visionbench.ray_fleet.driver import run_fleet
    except ImportError as e:
        raise VisionbenchError(f"visionbench fleet needs Ray ({e}): "
                               "pip install 'visionbench[fleet]'") from None
    from visionbench.results.fleet import summarise

    opts = Fleet(address, list(nodes) if nodes is not None else None, concurrent, node_timeout,
                 OUTLIER_PCT if outlier_pct is None else outlier_pct, runtime_env)
    options.setdefault("output", default_output("fleet"))
    cfg = study_config(**options)
    store = run_fleet(cfg, opts, reporter or Reporter(), _command(command, "fleet", options))
    return summarise(store.dir, opts.outlier_pct)


#: The kinds of run ``resume`` finishes, and why the others are not resumed.
NOT_RESUMED = {
    "tune": "its search adapts as it goes and its verdicts compare settings measured in one "
            "sitting; search the precisions it lacks again with visionbench tune --append "
            "--precision ... --output DIR",
    "mlperf": "run the scenarios it lacks again with visionbench mlperf --output DIR, which joins "
              "the run",
}


def resume(run: str | Path, *, reporter: Reporter | None = None,
           command: Sequence[str] | None = None) -> Results:
    """Finish a run that stopped (Ctrl-C, SIGTERM, kill -9, a crash) or has failed measurements:
    each command recorded in it is planned again from its recorded configuration, and only the
    records missing or failed are measured, on the same machine and software."""
    from visionbench.scenarios.study import run as run_study
    from visionbench.scenarios.suite import run as run_suite

    path = Path(run)
    reporter = reporter or Reporter()
    for note in recover(path):
        reporter.note(note)
    if is_fleet(path):
        raise VisionbenchError(f"{path} is a fleet run, which is not resumed: its nodes were "
                               "chosen and timed together; run the fleet again with --overwrite")
    prior = _load(path)
    if prior.kind in NOT_RESUMED:
        raise VisionbenchError(f"{path} is a {prior.kind} run, which is not resumed: "
                               f"{NOT_RESUMED[prior.kind]}")
    invocations = [i for i in prior.history() if i.how != "resume"]
    results = prior
    for inv in invocations:
        if inv.kind in NOT_RESUMED:
            reporter.note(f"not resumed: {' '.join(inv.command)} ({NOT_RESUMED[inv.kind]})")
            continue
        cfg = RunConfig.from_record(inv.config.model_dump(), path).replace(existing="resume")
        again = run_suite if inv.kind == "suite" else run_study
        results = again(cfg, reporter, _command(command, "resume", {"run": str(run)})).results
    return results


def load(path: str | Path) -> Results:
    """A run's results (its directory, or a results.json), as written by any visionbench with
    results schema version 1."""
    return _load(Path(path))


def compare(runs: Sequence[str | Path], baseline: str | Path | None = None,
            run_noise: float | None = None) -> Comparison:
    """Every run against the baseline (default: the first): ratios and their significance.
    ``run_noise``: how much a throughput figure moves from run to run beyond its windows' spread
    (a fraction; default ``settings.RUN_NOISE_RATIO`` times that spread; 0 trusts the windows)."""
    from visionbench.results.compare import compare as compare_runs

    return compare_runs([Path(r) for r in runs], Path(baseline) if baseline is not None else None,
                        run_noise)


def report(run: str | Path | Results) -> list[Path]:
    """Write a run's figures (PNG, SVG), summary.md and report.html into its directory."""
    from visionbench.reporting import write_report
    from visionbench.results.rundir import RunLock, describe_holder, holder

    results = run if isinstance(run, Results) else load(run)
    where = results.directory
    if where is None:
        raise VisionbenchError("these results have no run directory to write the report into")
    if (info := holder(where)) is not None:
        raise VisionbenchError(f"{where} is being written by another visionbench "
                               f"({describe_holder(info)}): report it once that has finished")
    # Written under the run's lock, and only into the run it was made from: a run that
    # replaced it meanwhile (--overwrite) keeps its own report.
    lock = RunLock.acquire(where, ["visionbench", "report", str(where)])
    try:
        if (there := _load(where).created_at) != results.created_at:
            raise VisionbenchError(f"{where} now holds another run (made {there}): this one's "
                                   "report is not written there")
        return write_report(results, where)
    except OSError as e:
        raise VisionbenchError(f"cannot write the report {failure(e, where)}; no report file "
                               f"was changed, and the measurements are kept in "
                               f"{where / 'results.json'}") from e
    finally:
        lock.release()


def report_fleet(summary: FleetSummary) -> list[Path]:
    """Write a fleet's report (fleet.md, fleet.html, figures) into its directory."""
    from visionbench.reporting.fleet import write_fleet_report

    try:
        return write_fleet_report(summary, summary.dir)
    except OSError as e:
        raise VisionbenchError(f"cannot write the fleet report {failure(e, summary.dir)}; no "
                               "report file was changed, and the measurements are kept in "
                               f"{summary.dir}") from e


def is_fleet(path: str | Path) -> bool:
    from visionbench.results.fleet import is_fleet as fleet_dir

    return fleet_dir(Path(path))


def recover(path: str | Path) -> list[str]:
    """Put back the run ``--overwrite`` moved aside from ``path`` where the run that replaced it
    stopped before its first measurement (``run``, ``resume`` and ``show`` do it first); name any
    other left there. One line per thing done."""
    from visionbench.results.policy import recover as put_back

    return put_back(Path(path))


def fleet_summary(path: str | Path, outlier_pct: float | None = None) -> FleetSummary:
    """A fleet run's summary: every node against the fleet median, outliers (threshold: the
    run's own unless given)."""
    from visionbench.results.fleet import summarise

    return summarise(Path(path), outlier_pct)


def write_comparison(cmp: Comparison, directory: str | Path, *, overwrite: bool = False
                     ) -> list[Path]:
    """compare.md, compare.html, compare.json and the figures into ``directory``: a new or empty
    folder, or with ``overwrite`` one whose contents are replaced whole (moved aside, deleted
    once the comparison is written, put back if it is not)."""
    from visionbench.reporting.comparison import write_comparison as write
    from visionbench.results.rundir import move_aside

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise VisionbenchError(f"--output exists and is not a directory: {out}")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise VisionbenchError(
            f"{out} already holds {len(held)} thing(s) ({', '.join(held[:4])}"
            f"{', ...' if len(held) > 4 else ''}); give another --output, or --overwrite to "
            "replace them")
    aside = move_aside(out) if held else None
    try:
        written = write(cmp, out)
    except BaseException as e:
        if aside is not None:
            aside.restore()
        if isinstance(e, OSError):
            raise VisionbenchError(f"cannot write the comparison {failure(e, out)}; "
                                   + ("what --output held is put back" if aside else
                                      "none of its files written")) from e
        raise
    if aside is not None:
        aside.drop()
    return written


def system() -> dict[str, Any]:
    """The system facts every run records."""
    from visionbench.sysinfo import system_info

    return system_info().as_dict()


def machine_state() -> tuple[MachineState, list[Check]]:
    """The machine's state as a run records it at its start (governor, boost, SMT, huge pages,
    isolated CPUs, hypervisor, steal, CPU pressure, load, busy processes), each fact judged with
    advice."""
    from visionbench.machine import Machine, checks

    state = Machine().state()
    return state, checks(state, available_cpus())


def machine_peak(refresh: bool = False) -> Peak:
    """This machine's peak arithmetic rate per precision (FP32 FMA, BF16 and INT8 dot products,
    every core at once), from the cache or measured (and cached); ``refresh`` measures again."""
    from visionbench.harness.peak import machine_peak as peak

    return peak(refresh=refresh)


def tune_machine(reset: bool = False) -> tuple[list[Change], list[str]]:
    """Set the performance governor and visionbench's transparent huge pages setting where root
    may (nothing of the user's is stopped), saving what was there in the cache; with ``reset``,
    put it back. The changes made, and the knobs this machine does not offer (with why)."""
    from visionbench.machine import Machine, Tuner

    tuner = Tuner(Machine(), cache_dir() / TUNE_SAVED)
    return (tuner.reset(), []) if reset else tuner.tune()


def list_engines() -> list[EngineInfo]:
    """Every engine visionbench knows: installed or not, versions, precision support here."""
    from visionbench.engines import catalog

    return catalog()


def list_models() -> dict[str, Entry]:
    """The registered models by name (``Entry.card``: task, input, parameters, GFLOPs, weights)."""
    from visionbench.models import registry

    return registry.entries()


def cache_dir() -> Path:
    """Where built and quantized models are cached ($VISIONBENCH_CACHE, else ~/.cache/visionbench)."""
    from visionbench.fsutil import cache_dir as where

    return where()


def cache_entries() -> list[CacheEntry]:
    """The cache's entries: what each is, size, when made, and whether it is whole."""
    from visionbench.cache import entries

    return entries()


def clear_cache(*, yes: bool = False) -> int:
    """Delete the cache's built and quantized models (never what else its folder holds: then
    nothing is deleted); the bytes freed. ``yes`` confirms it."""
    from visionbench.cache import clear

    try:
        return clear(yes=yes)
    except OSError as e:
        raise VisionbenchError(f"cannot clear the cache: {failure(e, cache_dir())}; "
                               "what was not deleted is kept") from e


def export(model: str, output: str | Path, *, weights: str | Path | None = None,
           seed: int = 0, overwrite: bool = False) -> Path:
    """Write a registered model (or ResNet-50 with a torchvision checkpoint) as ONNX; an existing
    ``output`` is replaced only with ``overwrite``."""
    from visionbench.fsutil import atomic_write_bytes
    from visionbench.models import build_builtin, from_checkpoint

    if weights is not None and model != "resnet50":
        raise VisionbenchError("--weights is a ResNet-50 checkpoint: use it with --model resnet50")
    out = Path(output)
    try:
        exists, is_dir = os.path.lexists(out), out.is_dir()
    except OSError as e:  # a name too long
        raise VisionbenchError(f"cannot write {out}: {e.strerror}") from e
    if exists and not overwrite:
        raise VisionbenchError(f"{out} already exists; give another --output, or --overwrite to "
                               "replace it")
    if is_dir:
        raise VisionbenchError(f"--output is a directory: {out}; give the ONNX file's path")
    src = from_checkpoint(Path(weights)) if weights is not None else build_builtin(model, seed)
    try:
        atomic_write_bytes(out, src.read_bytes())
    except OSError as e:
        raise VisionbenchError(f"cannot write {out}: {e.strerror}") from e
    return out


__all__ = ["accuracy", "cache_dir", "cache_entries", "clear_cache", "compare", "default_output",
           "dry_run", "export", "fleet", "fleet_summary", "is_fleet", "list_engines", "list_models", "load",
           "loadtest", "mlperf", "pipeline", "profile", "recover", "report", "report_fleet", "resume",
           "run", "serve", "study_config", "suite", "sweep", "system", "tune", "write_comparison"]
