"""A run's settings declared once, in sections (what is studied, timing, launch, inputs): each
field typed, with its default and, where the command line offers it, its flag's help (defaults
formatted from the constants here). The configuration (``config.RunConfig``) checks them, the
command line makes its flags from them (``cli.options.flags_of``) and results.json's settings
record is derived from them (``results.schema.RunSettings``); ``tune`` and ``fleet`` have their
own sections here, MLPerf's LoadGen options theirs beside its scenario
(``scenarios.mlperf.settings.Options``). A leaf: it imports no engine."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from visionbench.errors import VisionbenchError
from visionbench.flags import flag

Precision = Literal["fp32", "bf16", "int8"]
Mode = Literal["throughput", "latency"]
MODES: tuple[Mode, ...] = ("throughput", "latency")
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
#: What a model does (``--task``).
TASKS = ("classification", "detection", "segmentation", "other")
#: The engine measured where none is named.
DEFAULT_ENGINE = "openvino"
#: Batch sizes of the reference study (Intel AI Reference Models' TensorFlow defaults).
REFERENCE_BATCH: dict[Precision, int] = {"fp32": 116, "bf16": 80, "int8": 116}
#: Calibration samples for INT8 post-training quantization.
CALIBRATION_SAMPLES = 300
QUICK_THROUGHPUT_BATCH = 16
QUICK_CALIBRATION_SAMPLES = 64
#: How a cell is measured: the reference study's method (one process, one synchronous request on
#: all threads, the reference batch), and the engine's own configuration for the mode, as its own
#: benchmark tool runs it (``Engine.own_method``).
METHODS = ("reference", "engine")
#: What to do with an output directory that already holds a run: refuse (the default), add this
#: command's records to it, move it aside for a new run, or finish it (``resume``).
EXISTING = ("refuse", "append", "overwrite", "resume")
#: Where measurements run: each engine's in a worker process of its own, each measurement in one
#: of its own, or all in the process that runs the scenario.
ISOLATION = ("engine", "measurement", "none")
#: A worker process's allocator (``--allocator``): glibc's own, or one preloaded (Debian packages
#: libtcmalloc-minimal4, libjemalloc2); and its OpenMP runtime (``--omp-runtime``): the one the
#: engine ships, or Intel's (PyPI intel-openmp) preloaded (``launch.environment``).
ALLOCATORS = ("glibc", "tcmalloc", "jemalloc")
OMP_RUNTIMES = ("shipped", "intel")
#: Variables ``--env`` may not set: visionbench's own, and LD_PRELOAD (--allocator and
#: --omp-runtime preload what they need, checked in the worker).
RESERVED_ENV = re.compile(r"^(LD_PRELOAD|VISIONBENCH_.*)$")
#: The reference scripts' instance layouts.
LAYOUTS = ("throughput", "latency", "reference")
#: The batch sizes ``tune`` explores, up to where throughput stops rising.
LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: A fleet's node slower than its median by more than this many percent is an outlier.
OUTLIER_PCT = 10.0
#: compare's run-to-run noise of a throughput figure beyond its windows' spread, as a multiple of
#: that spread (``compare --run-noise`` gives it as a fixed percentage instead): a run samples the
#: host's state once, so its own windows cannot show how far its whole level moved. Measured on
#: the shared 2-core VM these defaults were set on: 0.7-0.8 on average, but runs there can sit in
#: one of two speed modes for all their windows, and 2 is the least that called none of 45 A/A
#: pairs of real runs a difference (docs/method.md, "Verdicts validated").
RUN_NOISE_RATIO = 2.0
#: When a timed window is disturbed (percent of the measured cores' time, or of their speed):
#: other processes' CPU time, the hypervisor's steal, the cores' slowdown at both its edges.
DISTURBED_OTHERS_PCT = 10.0
DISTURBED_STEAL_PCT = 10.0
DISTURBED_SLOWDOWN_PCT = 10.0


@dataclass(frozen=True)
class ModeDefaults:
    warmup: int  # inferences (batches) discarded before timing
    duration: float  # seconds per timed window
    repeats: int


FULL: dict[Mode, ModeDefaults] = {
    # Two warm-up batches: the first large batch after one warm-up still runs 10-20% slow.
    "throughput": ModeDefaults(warmup=2, duration=10.0, repeats=3),
    "latency": ModeDefaults(warmup=20, duration=5.0, repeats=3),
}
QUICK: dict[Mode, ModeDefaults] = {
    "throughput": ModeDefaults(warmup=1, duration=1.0, repeats=2),
    "latency": ModeDefaults(warmup=5, duration=1.0, repeats=2),
}
#: The suite's windows: 48 cells (8 workloads x 3 precisions x 2 modes) within 15 minutes on 2
#: cores; a heavy detector's batch-1 inference takes 2-3 s there, so 5 warm-up inferences.
SUITE: dict[Mode, ModeDefaults] = {
    "throughput": ModeDefaults(warmup=2, duration=4.0, repeats=3),
    "latency": ModeDefaults(warmup=5, duration=3.0, repeats=3),
}
#: The suite's --quick: 48 smoke cells within 4 minutes on 2 cores.
SUITE_QUICK: dict[Mode, ModeDefaults] = {
    "throughput": ModeDefaults(warmup=1, duration=0.5, repeats=2),
    "latency": ModeDefaults(warmup=3, duration=0.5, repeats=2),
}


#: Counts no run could reach (a billion inferences, a thousand windows, a day-long window):
#: refused as typing errors rather than left to run for ever.
MAX_INFERENCES = 10**9
MAX_WINDOWS = 1000
MAX_SECONDS = 86400.0
#: Threads per CPU beyond which --threads is refused (an engine would spawn them all at once).
MAX_THREADS_PER_CPU = 16


def parse_env(items: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """``--env``'s items as NAME=VALUE strings, checked: each flag given once per variable, or
    several in one comma list (a comma starts a new item only before an upper-case NAME=, so
    KMP_AFFINITY=granularity=fine,compact,1,0 is one item)."""
    if items is None:
        return None
    out: list[str] = []
    for given in [items] if isinstance(items, str) else items:
        out += re.split(r",(?=[A-Z_][A-Z0-9_]*=)", given)
    names: set[str] = set()
    for item in out:
        name, eq, _ = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise VisionbenchError(f"--env takes NAME=VALUE (a variable's name, then =), got '{item}'")
        if RESERVED_ENV.match(name):
            raise VisionbenchError(f"--env cannot set {name}: visionbench sets it (--allocator and "
                                   "--omp-runtime preload their libraries)")
        if name in names:
            raise VisionbenchError(f"--env sets {name} twice")
        names.add(name)
    return out or None


def _positive(values: dict[str, int | None]) -> None:
    for name, v in values.items():
        if v is not None and v <= 0:
            raise VisionbenchError(f"{name} must be a positive integer, got {v}")


def _at_most(values: dict[str, tuple[float | None, float]]) -> None:
    for name, (v, most) in values.items():
        if v is not None and v > most:
            raise VisionbenchError(f"{name} {v:g} is more than any run could do; at most {most:g}")


@dataclass(frozen=True)
class Study:
    """What is studied: engines, precisions and modes, the model, its batch sizes, and the
    engines' own options. List fields take a comma list on the command line."""

    engines: list[str] = flag(
        factory=lambda: [DEFAULT_ENGINE], group="study", name="--engine",
        cli_default=DEFAULT_ENGINE,
        help="Engine name, comma list, or 'all' (every installed engine).")
    precisions: list[Precision] = flag(
        factory=lambda: list(PRECISIONS), group="study", name="--precision",
        help=f"Comma list of {', '.join(PRECISIONS)} [default: all].")
    modes: list[Mode] = flag(
        factory=lambda: list(MODES), group="modes", name="--mode",
        help=f"Comma list of {', '.join(MODES)}, cold (each engine and precision started in "
             "fresh processes, timed to its first answer), profile (where its batch-1 time "
             "goes, per operation) and pipeline (the whole pipeline: JPEG decode, preprocessing "
             "on worker threads, a bounded queue, batching, feed, inference, post-processing, "
             f"beside inference alone) [default: {','.join(MODES)}].")
    methods: list[str] = flag(
        factory=lambda: list(METHODS), group="method", name="--method",
        help="Comma list of reference (one process, one synchronous request, the reference "
             "batch) and engine (the engine's own throughput or latency configuration, as its "
             "benchmark tool runs it) [default: both; reference only when an engine option is "
             "given; mlperf: reference].")
    #: Whether the user named the precisions: then an unsupported one is an error, not a skip.
    precisions_explicit: bool = False
    #: Whether the user named the engines: then one that cannot run the model is an error.
    engines_explicit: bool = True
    model: str = flag(
        "resnet50", group="study",
        help="A built-in model (`visionbench models` lists them), or a path to an ONNX file or a "
             "TensorFlow model (.keras, .h5, .pb, SavedModel directory).")
    weights: Path | None = flag(
        group="study", help="ResNet-50 weights: a torchvision checkpoint (.pth state_dict; every "
                            "engine runs it) or TensorFlow's own file (.keras, .h5, .pb, "
                            "SavedModel directory).")
    input_name: str | None = flag(
        group="study", help="Input tensor of a TensorFlow model file, if it cannot be inferred.")
    output_name: str | None = flag(
        group="study", help="Output (logits) tensor of a TensorFlow model file, if ambiguous.")
    input_shape: list[int] | None = flag(
        group="study", help="An ONNX model's input shape, e.g. 1,3,640,640, setting the dimensions "
                            "the file leaves dynamic or unknown; a dynamic batch follows "
                            "--batch-size [default: the task's size: 224, detection 640, "
                            "segmentation 512].")
    task: str | None = flag(
        group="study", choices=TASKS,
        help="What an ONNX model does [default: inferred from its outputs, else other].")
    #: A suite's workloads (registered models), measured in turn; None: one model.
    workloads: list[str] | None = None
    batch_size: int | None = flag(
        group="modes", help="Throughput batch size [default: " + ", ".join(
            f"{b} for {p}" for p, b in REFERENCE_BATCH.items()) + "].")
    #: A batch-size sweep: throughput (and per-call latency) at each of these batch sizes.
    batch_sizes: list[int] | None = None
    allow_emulated: bool = flag(
        False, group="study",
        help="Measure a precision this CPU lacks natively, where the engine can emulate it.")
    accuracy: bool = flag(False, group="modes",
                          help="Also measure accuracy on --data at every precision.")
    #: ``--mode cold``: each engine and precision started in fresh processes.
    cold: bool = False
    #: ``--mode profile`` (or ``--profile``): each engine and precision profiled per operation at
    #: batch 1, after the timed measurements.
    profile: bool = flag(False, group="modes",
                         help="Also profile each engine and precision per operation at batch 1, "
                              "after the timed measurements (= adding profile to --mode).")
    #: ``--mode pipeline``: each engine and precision running the whole pipeline.
    pipeline: bool = False
    pipeline_threads: list[int] = flag(
        factory=lambda: [1, 2], group="pipeline",
        help="--mode pipeline: decode-and-preprocess worker threads, a comma list: one pass of "
             "the pipeline each [default: 1,2].")
    pipeline_batch: int = flag(
        1, group="pipeline", help="--mode pipeline: images per inference call, formed from the "
                                  "queue.")
    no_cache: bool = flag(False, group="modes",
                          help="--mode cold: re-run INT8 quantization in each fresh process "
                               "instead of reading visionbench's cache.")
    drop_caches: bool = flag(False, group="modes",
                             help="--mode cold: drop the OS file cache before each fresh process "
                                  "(root).")
    seed: int = flag(0, group="study", help="Seed of weights and inputs.")
    #: The engines' own options given (``Engine.options``: OpenVINO's streams and hint, ONNX
    #: Runtime's inter-op threads...), by name; the configuration checks them.
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive({"--batch-size": self.batch_size})
        if not 0 <= self.seed < 2**32:
            raise VisionbenchError(f"--seed must be between 0 and {2**32 - 1}, got {self.seed}")
        if self.task is not None and self.task not in TASKS:
            raise VisionbenchError(f"unknown --task '{self.task}'; choose from {', '.join(TASKS)}")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise VisionbenchError(f"unknown method in '{','.join(self.methods)}'; choose from "
                                   f"{', '.join(METHODS)}")
        if (self.no_cache or self.drop_caches) and not self.cold:
            raise VisionbenchError("--no-cache and --drop-caches apply to cold starts: give "
                                   "--mode cold")
        if not (self.modes or self.cold or self.profile or self.pipeline or self.accuracy):
            raise VisionbenchError("no mode to measure: give --mode throughput, latency, cold, "
                                   "profile or pipeline")
        threads = self.pipeline_threads
        if isinstance(threads, (str, int)):  # the command line's comma list, or one number
            try:
                threads = [int(t) for t in str(threads).split(",") if t.strip()]
            except ValueError:
                raise VisionbenchError("--pipeline-threads takes a comma list of integers, got "
                                       f"'{self.pipeline_threads}'") from None
        if not threads or any(t <= 0 for t in threads):
            raise VisionbenchError("--pipeline-threads must be positive integers, got "
                                   f"'{','.join(map(str, threads)) or self.pipeline_threads}'")
        object.__setattr__(self, "pipeline_threads", list(dict.fromkeys(threads)))
        _positive({"--pipeline-batch": self.pipeline_batch})
        for b in self.batch_sizes or []:
            if b <= 0:
                raise VisionbenchError(f"--batch-sizes must be positive integers, got {b}")


@dataclass(frozen=True)
class Timing:
    """How long and how often to time: it makes each measurement's timing plan."""

    duration: float | None = flag(
        group="timing", help="Seconds per timed repeat [default: "
                             f"{FULL['throughput'].duration:g} throughput, "
                             f"{FULL['latency'].duration:g} latency].")
    iterations: int | None = flag(
        group="timing", help="Inferences per timed repeat (instead of --duration).")
    repeats: int | None = flag(
        group="timing", help=f"Independent timed repeats [default: {FULL['throughput'].repeats}].")
    warmup: int | None = flag(
        group="timing", help=f"Warm-up inferences [default: {FULL['throughput'].warmup} batches "
                             f"throughput, {FULL['latency'].warmup} latency].")
    quick: bool = flag(
        False, group="timing",
        help=f"A smoke run in about a minute: throughput batch {QUICK_THROUGHPUT_BATCH}, short "
             "repeats.")
    #: The suite's shorter windows (``SUITE``, ``SUITE_QUICK``).
    suite: bool = False
    extra_windows: int | None = flag(
        group="timing", help="Windows that may be added to the repeats: in place of disturbed "
                             "ones (another process, steal or a slower core took more than its "
                             "threshold), or to reach --until-stable [default: as many as "
                             "--repeats].")
    until_stable: float | None = flag(
        group="timing", help="Add windows until the throughput's 95% interval is within this "
                             "many percent of the figure, or --extra-windows is spent.")
    disturbed_others: float = flag(
        DISTURBED_OTHERS_PCT, group="timing",
        help="A window is disturbed when processes that are not visionbench's took more than "
             "this percent of the measured cores' time.")
    disturbed_steal: float = flag(
        DISTURBED_STEAL_PCT, group="timing",
        help="... or the hypervisor stole more than this percent of their time.")
    disturbed_slowdown: float = flag(
        DISTURBED_SLOWDOWN_PCT, group="timing",
        help="... or a short probe found the cores this percent slower than the median of the "
             "process's probes at both ends of the window.")

    def __post_init__(self) -> None:
        _positive({"--iterations": self.iterations, "--repeats": self.repeats})
        if self.extra_windows is not None and self.extra_windows < 0:
            raise VisionbenchError(f"--extra-windows must be 0 or more, got {self.extra_windows}")
        if self.until_stable is not None and not 0 < self.until_stable < 100:
            raise VisionbenchError(f"--until-stable must be a percent between 0 and 100, got "
                                   f"{self.until_stable:g}")
        for name in ("disturbed_others", "disturbed_steal", "disturbed_slowdown"):
            if not 0 < (v := getattr(self, name)) <= 100:
                raise VisionbenchError(f"--{name.replace('_', '-')} must be a percent above 0 "
                                       f"and at most 100, got {v:g}")
        if self.duration is not None and not self.duration > 0:
            raise VisionbenchError(f"--duration must be positive seconds, got {self.duration}")
        if self.warmup is not None and self.warmup < 0:
            raise VisionbenchError(f"--warmup must be 0 or more, got {self.warmup}")
        _at_most({"--duration": (self.duration, MAX_SECONDS),
                  "--iterations": (self.iterations, MAX_INFERENCES),
                  "--warmup": (self.warmup, MAX_INFERENCES),
                  "--repeats": (self.repeats, MAX_WINDOWS),
                  "--extra-windows": (self.extra_windows, MAX_WINDOWS)})
        if self.duration is not None and self.iterations is not None:
            raise VisionbenchError("give --duration or --iterations, not both")


@dataclass(frozen=True)
class Launch:
    """Where the engines run: threads, and pinned instances (a number, or a reference layout)."""

    threads: int = flag(1, group="study", cli_default=None,
                        help="Threads per engine [default: all available cores].")
    #: Whether the user named the threads; else each instance gets one thread per core.
    threads_explicit: bool = False
    instances: int | None = flag(
        group="instances", help="Engine processes run at once, each pinned to its own cores; "
                                "throughput is their sum [default: one, in this process, "
                                "unpinned].")
    cores_per_instance: int | None = flag(
        group="instances",
        help="Physical cores per instance [default: the available cores / --instances].")
    layout: str | None = flag(
        group="instances", choices=LAYOUTS,
        help="The reference scripts' instances: throughput = one per NUMA node with all its "
             "cores; latency = 4 cores each, filling the machine; reference = each mode its own.")
    isolation: str | None = flag(
        group="instances", choices=ISOLATION,
        help="engine: each engine's measurements in a fresh worker process of its own, so none "
             "runs beside another engine's runtime or inherits its memory; measurement: each "
             "measurement in one of its own, so none holds what an earlier one left (a process "
             "start and the engine's import each); none: every engine in this process "
             "[default: engine].")
    #: Each measurement timed in a fresh process of its own, even under this process's
    #: environment (tune's control for an environment variant).
    fresh_process: bool = False
    allocator: str | None = flag(
        group="environment", choices=ALLOCATORS,
        help="The worker processes' memory allocator: glibc's own, or tcmalloc or jemalloc "
             "preloaded (Debian: libtcmalloc-minimal4, libjemalloc2), checked in use there "
             "[default: glibc].")
    omp_runtime: str | None = flag(
        group="environment", choices=OMP_RUNTIMES,
        help="The worker processes' OpenMP runtime: the one the engine ships, or Intel's "
             "(pip install intel-openmp) preloaded, which then serves the engine's OpenMP calls "
             "[default: shipped].")
    env: list[str] | None = flag(
        group="environment", multiple=True,
        help="NAME=VALUE set in the worker processes' environment (KMP_BLOCKTIME=1, "
             "OMP_WAIT_POLICY=PASSIVE...): repeat it, or give a comma list.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", parse_env(self.env))
        if self.isolation == "none" and (self.allocator or self.omp_runtime or self.env):
            raise VisionbenchError("--allocator, --omp-runtime and --env set the environment of "
                                   "worker processes: they do not apply with --isolation none")
        for name, value, allowed in (("--allocator", self.allocator, ALLOCATORS),
                                     ("--omp-runtime", self.omp_runtime, OMP_RUNTIMES)):
            if value is not None and value not in allowed:
                raise VisionbenchError(f"unknown {name} '{value}'; choose from {', '.join(allowed)}")
        if self.isolation is not None and self.isolation not in ISOLATION:
            raise VisionbenchError(f"unknown isolation '{self.isolation}'; choose from "
                                   f"{', '.join(ISOLATION)}")
        _positive({"--threads": self.threads, "--instances": self.instances,
                   "--cores-per-instance": self.cores_per_instance})
        most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
        _at_most({"--threads": (self.threads, most)})
        if self.layout is not None and (self.instances or self.cores_per_instance):
            raise VisionbenchError("give --layout or --instances/--cores-per-instance, not both")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise VisionbenchError(f"unknown layout '{self.layout}'; choose from {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class Inputs:
    """The images: a data set, its labels, INT8 calibration images, preprocessing."""

    data: Path | None = flag(
        group="study", help="Images: class folders named by WordNet id, or a folder with "
                            "val_map.txt. Calibrates INT8 on real images; with --accuracy, "
                            "measures accuracy on them.")
    labels: Path | None = flag(
        group="study", help="Labels file ('filename label' lines) for a flat --data folder.")
    limit: int | None = flag(group="study", help="Use only the first N images of --data.")
    calibration_data: Path | None = flag(
        group="study", help="INT8 calibration images: a folder, or a list file (MLPerf "
                            "cal_image_list form) [default: a fixed-seed sample of --data, else "
                            "synthetic].")
    calibration_samples: int | None = flag(
        group="study", help=f"INT8 calibration samples [default: {CALIBRATION_SAMPLES}; "
                            f"{QUICK_CALIBRATION_SAMPLES} with --quick].")
    preprocess: str | None = flag(
        group="study", help="Image preprocessing instead of the model's own: torchvision, "
                            "mlperf or efficientnet-lite.")

    def __post_init__(self) -> None:
        _positive({"--limit": self.limit, "--calibration-samples": self.calibration_samples})


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
class Tune:
    """``visionbench tune``'s own options (its batch sizes are the study's)."""

    budget: str = flag("10m", help="Wall time for the whole search (e.g. 90s, 5m, 1h); one-off "
                                   "INT8 quantization is not counted.")
    max_latency_ms: float | None = flag(
        help="Only settings whose p99 latency per call (one batch) stays within this bound.")

    def __post_init__(self) -> None:
        parse_budget(self.budget)
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise VisionbenchError(f"--max-latency-ms must be positive, got {self.max_latency_ms:g}")

    @property
    def seconds(self) -> float:
        return parse_budget(self.budget)


@dataclass(frozen=True)
class Fleet:
    """``visionbench fleet``'s own options: the Ray cluster, its nodes, how they run."""

    address: str = flag("auto", help="The Ray cluster: auto (RAY_ADDRESS, else the cluster started "
                                     "on this machine), HOST:PORT of its head, or "
                                     "ray://HOST:10001 (Ray Client).")
    nodes: list[str] | None = flag(
        help="Comma list of nodes to run on: node ids (or their first 6+ characters), hostnames, "
             "IP addresses, Ray resource names or labels key=value [default: every alive node "
             "with CPUs].")
    concurrent: bool = flag(
        False, name="--concurrent/--sequential",
        help="All nodes at once with each measurement's windows started together (the "
             "cluster's aggregate images/s), or one node after another (nodes sharing hardware "
             "do not disturb each other).")
    node_timeout: float | None = flag(
        help="Seconds a node may take for its whole study before it is stopped and reported as "
             "timed out [default: no limit].")
    outlier_pct: float = flag(OUTLIER_PCT, help="A node slower than the fleet median by more than "
                                                "this many percent is an outlier.")
    #: Ray's runtime_env for every node's task (the command line reads it from a JSON file).
    runtime_env: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.node_timeout is not None and not self.node_timeout > 0:
            raise VisionbenchError(f"--node-timeout must be positive seconds, got {self.node_timeout:g}")
        if not 0 < self.outlier_pct < 100:
            raise VisionbenchError(f"--outlier-pct must be between 0 and 100, got {self.outlier_pct:g}")
        if self.nodes == []:
            raise VisionbenchError("--nodes is empty")


SECTIONS = {"study": Study, "timing": Timing, "launch": Launch, "inputs": Inputs}
#: Each flat option name (the command line's, the API's) and the section that holds it.
SECTION_OF = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}
