"""A run's configuration: the sections declared in ``settings`` (what is studied, timing, launch,
inputs) and its output, each checked once with a message naming its flag; the engines' own options
checked against the engines' declarations."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionbench.data.calibration import Calibration
from visionbench.engines import Engine, SessionSpec, all_options
from visionbench.errors import VisionbenchError
from visionbench.harness.timing import TimingPlan
from visionbench.harness.watch import Thresholds
from visionbench.launch.environment import Environment
from visionbench.models.shapes import parse_shape
from visionbench.models.spec import ModelSpec
from visionbench.settings import (
    CALIBRATION_SAMPLES,
    EXISTING,
    FULL,
    QUICK,
    QUICK_CALIBRATION_SAMPLES,
    QUICK_THROUGHPUT_BATCH,
    REFERENCE_BATCH,
    SECTION_OF,
    SECTIONS,
    SUITE,
    SUITE_QUICK,
    Inputs,
    Launch,
    Mode,
    Precision,
    Study,
    Timing,
)

#: ``visionbench mlperf --short``: seconds of the shortened run (MLPerf requires 600).
MLPERF_SHORT_SECONDS = 10.0


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
        if self.study.input_shape is not None:
            object.__setattr__(self, "study", dataclasses.replace(
                self.study, input_shape=parse_shape(self.study.input_shape)))
        known = all_options()
        for name, value in self.study.engine_options.items():
            if name not in known:
                raise VisionbenchError(f"unknown engine option '{name}'; engines take "
                                       f"{', '.join(known) or 'none'}")
            known[name][0].check(value)
        if self.study.accuracy and self.inputs.data is None:
            raise VisionbenchError("accuracy needs images: give --data DIR")
        if self.existing not in EXISTING:
            raise VisionbenchError(f"unknown policy for an existing run '{self.existing}'")
        if not self.environment.default:
            if self.study.cold or self.study.profile:
                raise VisionbenchError("--allocator, --omp-runtime and --env apply to the throughput "
                                       "and latency measurements, not to --mode cold or profile")
            self.environment.variables()  # a library asked for and not installed: one line
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

    @property
    def environment(self) -> Environment:
        """The worker processes' environment: ``--allocator``, ``--omp-runtime``, ``--env``."""
        la = self.launch
        return Environment(la.allocator or "glibc", la.omp_runtime or "shipped",
                           tuple(tuple(e.split("=", 1)) for e in la.env or ()))  # type: ignore[misc]

    def with_environment(self, env: Environment) -> RunConfig:
        """A copy whose worker processes run under ``env``."""
        return self.replace(allocator=None if env.allocator == "glibc" else env.allocator,
                            omp_runtime=None if env.omp_runtime == "shipped" else env.omp_runtime,
                            env=[f"{k}={v}" for k, v in env.env] or None)

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
        """A measurement's timing plan: the given timing over the profile's defaults (full,
        quick, the suite's, the suite's quick)."""
        batch = batch or self.batch_for(precision, mode)
        t = self.timing
        d = {(False, False): FULL, (True, False): QUICK, (False, True): SUITE,
             (True, True): SUITE_QUICK}[t.quick, t.suite][mode]
        return TimingPlan(
            batch_size=batch,
            warmup=d.warmup if t.warmup is None else t.warmup,
            repeats=t.repeats or d.repeats,
            duration=None if t.iterations is not None else (t.duration or d.duration),
            iterations=t.iterations,
            extra=(t.repeats or d.repeats) if t.extra_windows is None else t.extra_windows,
            until_stable=None if t.until_stable is None else t.until_stable / 100,
        )

    @property
    def thresholds(self) -> Thresholds:
        """When a timed window is disturbed."""
        t = self.timing
        return Thresholds(others=t.disturbed_others / 100, steal=t.disturbed_steal / 100,
                          slowdown=t.disturbed_slowdown / 100)

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
