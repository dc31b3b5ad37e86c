"""Run configuration in parts (what is studied, timing, launch, inputs, output), each validated
once with a message naming its flag, with the reference study's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from visionbench.data.calibration import Calibration
from visionbench.engines import PRECISIONS, Engine, Precision, SessionSpec, all_options
from visionbench.errors import VisionbenchError
from visionbench.harness.instances import LAYOUTS
from visionbench.harness.timing import MODES, Mode, TimingPlan
from visionbench.models.shapes import TASKS, parse_shape
from visionbench.models.spec import ModelSpec

#: Batch sizes of the reference study (Intel AI Reference Models' TensorFlow defaults).
REFERENCE_BATCH: dict[Precision, int] = {"fp32": 116, "bf16": 80, "int8": 116}
#: ``visionbench mlperf --short``: seconds of the shortened run (MLPerf requires 600).
MLPERF_SHORT_SECONDS = 10.0
#: Calibration samples for INT8 post-training quantization.
CALIBRATION_SAMPLES = 300
#: How a cell is measured: the reference study's method (one process, one synchronous request on
#: all threads, the reference batch), and the engine's own configuration for the mode, as its own
#: benchmark tool runs it (``Engine.own_method``).
METHODS = ("reference", "engine")


#: What to do with an output directory that already holds a run: refuse (the default), add this
#: command's records to it, move it aside for a new run, or finish it (``resume``).
EXISTING = ("refuse", "append", "overwrite", "resume")


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
QUICK_THROUGHPUT_BATCH = 16
QUICK_CALIBRATION_SAMPLES = 64


def parse_list(value: str | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    """A comma list checked against ``allowed``; ``all`` means every allowed value."""
    if value is None:
        return None
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not items:
        raise VisionbenchError(f"empty {what} list")
    if items == ["all"]:
        return list(allowed)
    for v in items:
        if v not in allowed:
            raise VisionbenchError(f"unknown {what} '{v}'; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class Study:
    """What is studied: engines, precisions and modes, the model, its batch sizes, and the
    engines' own options."""

    engines: list[str]
    precisions: list[Precision] = field(default_factory=lambda: list(PRECISIONS))
    modes: list[Mode] = field(default_factory=lambda: list(MODES))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    #: Whether the user named the precisions: then an unsupported one is an error, not a skip.
    precisions_explicit: bool = False
    #: Whether the user named the engines: then one that cannot run the model is an error.
    engines_explicit: bool = True
    model: str = "resnet50"
    #: ResNet-50 weights: a torchvision checkpoint (every engine runs it) or a TensorFlow file.
    weights: Path | None = None
    #: Tensors of a TensorFlow model file, where they cannot be inferred.
    input_name: str | None = None
    output_name: str | None = None
    #: An ONNX file's input shape where the file leaves dimensions dynamic or unknown
    #: (``--input-shape 1,3,640,640``; the batch follows ``batch_size`` where it is dynamic), and
    #: what the model does (else inferred from its outputs).
    input_shape: list[int] | None = None
    task: str | None = None
    #: A suite's workloads (registered models), measured in turn; None: one model.
    workloads: list[str] | None = None
    batch_size: int | None = None
    #: A batch-size sweep: throughput (and per-call latency) at each of these batch sizes.
    batch_sizes: list[int] | None = None
    allow_emulated: bool = False
    #: Measure accuracy on the data (labels from class folders or a labels file) as well.
    accuracy: bool = False
    #: ``--mode cold``: each engine and precision started in fresh processes; with ``no_cache``
    #: each re-quantizes INT8, with ``drop_caches`` the OS file cache is dropped before each.
    cold: bool = False
    no_cache: bool = False
    drop_caches: bool = False
    seed: int = 0
    #: The engines' own options given (``Engine.options``: OpenVINO's streams and hint, ONNX
    #: Runtime's inter-op threads...), by name.
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive({"--batch-size": self.batch_size})
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", parse_shape(self.input_shape))
        if self.task is not None and self.task not in TASKS:
            raise VisionbenchError(f"unknown --task '{self.task}'; choose from {', '.join(TASKS)}")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise VisionbenchError(f"unknown method in '{','.join(self.methods)}'; choose from "
                                   f"{', '.join(METHODS)}")
        if (self.no_cache or self.drop_caches) and not self.cold:
            raise VisionbenchError("--no-cache and --drop-caches apply to cold starts: give "
                                   "--mode cold")
        if not self.modes and not self.cold and not self.accuracy:
            raise VisionbenchError("no mode to measure: give --mode throughput, latency or cold")
        for b in self.batch_sizes or []:
            if b <= 0:
                raise VisionbenchError(f"--batch-sizes must be positive integers, got {b}")
        known = all_options()
        for name, value in self.engine_options.items():
            if name not in known:
                raise VisionbenchError(f"unknown engine option '{name}'; engines take "
                                       f"{', '.join(known) or 'none'}")
            known[name][0].check(value)


@dataclass(frozen=True)
class Timing:
    """How long and how often to time: it makes each measurement's timing plan."""

    duration: float | None = None
    iterations: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    #: A smoke run: small throughput batch, short windows, few calibration samples.
    quick: bool = False
    #: The suite's shorter windows (``SUITE``, ``SUITE_QUICK``).
    suite: bool = False

    def __post_init__(self) -> None:
        _positive({"--iterations": self.iterations, "--repeats": self.repeats})
        if self.duration is not None and not self.duration > 0:
            raise VisionbenchError(f"--duration must be positive seconds, got {self.duration}")
        if self.warmup is not None and self.warmup < 0:
            raise VisionbenchError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.duration is not None and self.iterations is not None:
            raise VisionbenchError("give --duration or --iterations, not both")

    def plan(self, mode: Mode, batch: int) -> TimingPlan:
        profiles = {(False, False): FULL, (True, False): QUICK, (False, True): SUITE,
                    (True, True): SUITE_QUICK}
        d = profiles[self.quick, self.suite][mode]
        return TimingPlan(
            batch_size=batch,
            warmup=d.warmup if self.warmup is None else self.warmup,
            repeats=self.repeats or d.repeats,
            duration=None if self.iterations is not None else (self.duration or d.duration),
            iterations=self.iterations,
        )


ISOLATION = ("engine", "measurement", "none")


@dataclass(frozen=True)
class Launch:
    """Where the engines run: threads, and pinned instances (a number, or a reference layout)."""

    threads: int = 1
    #: Whether the user named the threads; else each instance gets one thread per core.
    threads_explicit: bool = False
    instances: int | None = None
    cores_per_instance: int | None = None
    layout: str | None = None
    #: ``ISOLATION``: each engine's measurements in a worker process of its own (the default,
    #: None), each measurement in one of its own, or all in the process that runs the scenario.
    isolation: str | None = None

    def __post_init__(self) -> None:
        if self.isolation is not None and self.isolation not in ISOLATION:
            raise VisionbenchError(f"unknown isolation '{self.isolation}'; choose from "
                                   f"{', '.join(ISOLATION)}")
        _positive({"--threads": self.threads, "--instances": self.instances,
                   "--cores-per-instance": self.cores_per_instance})
        if self.layout is not None and (self.instances or self.cores_per_instance):
            raise VisionbenchError("give --layout or --instances/--cores-per-instance, not both")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise VisionbenchError(f"unknown layout '{self.layout}'; choose from {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class Inputs:
    """The images: a data set, its labels, INT8 calibration images, preprocessing."""

    data: Path | None = None
    labels: Path | None = None
    limit: int | None = None
    #: INT8 calibration images (a folder or a list file) instead of a sample of ``data``.
    calibration_data: Path | None = None
    calibration_samples: int | None = None
    #: Preprocessing instead of the model's own (``data.preprocess.PREPROCESSING``).
    preprocess: str | None = None

    def __post_init__(self) -> None:
        _positive({"--limit": self.limit, "--calibration-samples": self.calibration_samples})


def _positive(values: dict[str, int | None]) -> None:
    for flag, v in values.items():
        if v is not None and v <= 0:
            raise VisionbenchError(f"{flag} must be a positive integer, got {v}")


SECTIONS = {"study": Study, "timing": Timing, "launch": Launch, "inputs": Inputs}
#: Each flat option name (the command line's, the API's) and the section that holds it.
SECTION_OF = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration: what is studied, timing, launch, inputs and output; each part
    checks its own values, once, naming the flag."""

    study: Study
    timing: Timing = field(default_factory=Timing)
    launch: Launch = field(default_factory=Launch)
    inputs: Inputs = field(default_factory=Inputs)
    output: Path = Path("results")
    #: An output that already holds a run: one of ``EXISTING``; resume is ``visionbench resume``'s.
    existing: str = "refuse"
    #: With ``append``: a record whose key the run already holds replaces it, instead of refusing.
    replace_records: bool = False

    def __post_init__(self) -> None:
        if self.study.accuracy and self.inputs.data is None:
            raise VisionbenchError("accuracy needs images: give --data DIR")
        if self.existing not in EXISTING:
            raise VisionbenchError(f"unknown policy for an existing run '{self.existing}'")
        if self.replace_records and self.existing != "append":
            raise VisionbenchError("--replace replaces measurements of the run it appends to: "
                                   "give --append too")

    @classmethod
    def of(cls, output: Path = Path("results"), existing: str = "refuse",
           replace_records: bool = False, **options: Any) -> RunConfig:
        """A configuration from flat option names (``engines``, ``duration``, ``threads``, ...)."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in options.items():
            if key not in SECTION_OF:
                raise TypeError(f"RunConfig.of() got an unexpected keyword argument '{key}'")
            parts[SECTION_OF[key]][key] = value
        return cls(**{name: SECTIONS[name](**kw) for name, kw in parts.items()}, output=output,
                   existing=existing, replace_records=replace_records)

    @classmethod
    def from_record(cls, record: dict[str, Any], output: Path) -> RunConfig:
        """The configuration a run recorded (``as_dict``), to measure it again (``resume``)."""
        known = all_options()
        options: dict[str, Any] = {k: v for k, v in record.items() if k in SECTION_OF}
        options.pop("engine_options", None)
        options.setdefault("methods", ["reference"])  # recorded before methods: the reference
        for key in ("weights", "data", "labels", "calibration_data"):
            if options.get(key) is not None:
                options[key] = Path(options[key])
        if not isinstance(options.get("threads"), int):
            raise VisionbenchError(f"{output} records no thread count to measure with again")
        engine_options = {k: v for k, v in record.items() if k in known and v is not None}
        return cls.of(output=output, engine_options=engine_options, **options)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some flat options (and ``output``) changed, each part checked again."""
        parts: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key not in ("output", "existing", "replace_records"):
                parts.setdefault(SECTION_OF[key], {})[key] = value
        top = {k: changes[k] for k in ("output", "existing", "replace_records") if k in changes}
        return dataclasses.replace(
            self, **top,
            **{name: dataclasses.replace(getattr(self, name), **kw) for name, kw in parts.items()})

    def batch_for(self, precision: Precision, mode: Mode) -> int:
        if mode == "latency":
            return 1
        if self.study.batch_size is not None:
            return self.study.batch_size
        return QUICK_THROUGHPUT_BATCH if self.timing.quick else REFERENCE_BATCH[precision]

    def batches(self, precision: Precision, mode: Mode) -> list[int]:
        """The batch sizes measured: a sweep's list in throughput mode, else the one of the mode."""
        if self.study.batch_sizes and mode == "throughput":
            return list(self.study.batch_sizes)
        return [self.batch_for(precision, mode)]

    def plan(self, precision: Precision, mode: Mode, batch: int | None = None) -> TimingPlan:
        return self.timing.plan(mode, batch or self.batch_for(precision, mode))

    def options_for(self, engine: Engine) -> dict[str, Any]:
        """The given options that ``engine`` declares."""
        given = self.study.engine_options
        return {o.name: given[o.name] for o in engine.options if o.name in given}

    def spec(self, engine: Engine, model: ModelSpec, precision: Precision, batch: int,
             calibration: Calibration, threads: int | None = None) -> SessionSpec:
        """What ``engine`` prepares a session for under this configuration: its own options as
        given, on ``threads`` (default: the run's)."""
        return SessionSpec(model, precision, threads or self.launch.threads, calibration, batch,
                           self.options_for(engine))

    def for_method(self, engine: Engine, method: str, mode: Mode, precision: Precision) -> RunConfig:
        """The configuration a cell of ``method`` runs: the engine method lays the engine's own
        options for the mode and precision under the given ones and runs in one process (no
        instances)."""
        own, _ = engine.own_method(mode, precision, self.launch.threads)
        if method == "reference" or own is None:
            return self
        return self.replace(engine_options=own | self.study.engine_options, layout=None,
                            instances=None, cores_per_instance=None)

    def options_lacking(self, engine: Engine) -> list[str]:
        """The flags of given options that ``engine`` does not take."""
        mine = {o.name for o in engine.options}
        return [opt.flag for name, (opt, _) in all_options().items()
                if name in self.study.engine_options and name not in mine]

    @property
    def n_calibration(self) -> int:
        if self.inputs.calibration_samples is not None:
            return self.inputs.calibration_samples
        return QUICK_CALIBRATION_SAMPLES if self.timing.quick else CALIBRATION_SAMPLES

    def as_dict(self) -> dict[str, Any]:
        """The flat record results.json has always held (``results.RunSettings``)."""
        d: dict[str, Any] = {}
        for name in SECTIONS:
            d.update(asdict(getattr(self, name)))
        # Every engine option as its own key, as results.json has always had them.
        d.update({name: None for name in all_options()} | d.pop("engine_options"))
        d["output"] = str(self.output)
        d["existing"], d["replace_records"] = self.existing, self.replace_records
        for key in ("weights", "data", "labels", "calibration_data"):
            d[key] = None if d[key] is None else str(d[key])
        d["calibration_samples"] = self.n_calibration
        d["reference_batch"] = dict(REFERENCE_BATCH)
        return d
