"""The results store: one directory per run with results.json (versioned schema), results.csv and
raw latencies, each rewritten atomically the moment a measurement completes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visionbench import __version__
from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_text
from visionbench.harness.stats import LatencySummary

SCHEMA_VERSION = 1
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RAW_DIR = "raw"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class InstanceResult(BaseModel):
    """One pinned instance of a multi-instance measurement."""

    model_config = ConfigDict(extra="forbid")

    index: int
    cores: list[int] = Field(description="CPUs the instance was pinned to")
    affinity: list[int] = Field(description="CPU affinity read back from the running process")
    throughput_ips: float
    throughput_per_repeat: list[float]
    latency: LatencySummary


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    mode: Literal["throughput", "latency"]
    batch_size: int
    threads: int
    status: Literal["ok", "skipped", "unsupported", "failed"] = Field(
        description="skipped: would be emulated (see --allow-emulated); unsupported: cannot run"
    )
    support: Literal["native", "emulated", "unsupported"]
    reason: str | None = Field(None, description="why a measurement is unsupported or failed")
    executed_precision: str | None = Field(None, description="what the engine really ran")
    emulated: bool = False
    layer_precisions: dict[str, int] = Field(default_factory=dict)
    quantized_ops: int | None = None
    engine_details: dict[str, Any] = Field(default_factory=dict)
    throughput_ips: float | None = Field(None, description="images/s, median of repeats")
    throughput_per_repeat: list[float] = Field(default_factory=list)
    cv: float | None = Field(None, description="coefficient of variation of repeat throughputs")
    latency: LatencySummary | None = Field(None, description="pooled over all timed windows")
    raw_latencies: str | None = Field(None, description="JSON file of per-window latencies (ns)")
    repeats: int = 0
    warmup_iterations: int = 0
    warmup_seconds: float = 0.0
    timed_iterations: int = 0
    timed_seconds: float = 0.0
    prepare_seconds: float = 0.0
    peak_rss_mib: float | None = Field(None, description="the largest instance's, with instances")
    instances: int = Field(1, description="engine processes timed together; throughput is their sum")
    cores_per_instance: int | None = None
    layout: Literal["throughput", "latency", "custom"] | None = None
    layout_reason: str | None = None
    pinning: str | None = None
    per_instance: list[InstanceResult] = Field(default_factory=list)
    released_at: float | None = Field(
        None, description="fleet --concurrent: Unix time the timed windows began, released "
        "together with the other nodes from a barrier")
    phase: Literal["explore", "confirm"] | None = Field(
        None, description="tune: a short exploring window, or a re-measurement with repeats")
    warnings: list[str] = Field(default_factory=list)
    started_at: str
    finished_at: str


class Accuracy(BaseModel):
    """One engine x precision over a labelled image set (or, unlabelled, agreement only)."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    status: Literal["ok", "skipped", "unsupported", "failed"]
    reason: str | None = None
    executed_precision: str | None = None
    emulated: bool = False
    quantized_ops: int | None = None
    images: int = 0
    top1: float | None = Field(None, description="fraction of images whose top-1 class is the label")
    top5: float | None = None
    agreement_with_fp32: float | None = Field(
        None, description="fraction of images whose top-1 equals this engine's FP32 top-1")
    mlperf_99: Literal["pass", "fail"] | None = Field(
        None, description="MLPerf's rule: top-1 at least 99% of this engine's FP32 top-1")
    inference_seconds: float = 0.0
    predictions: str | None = Field(None, description="JSON file of each image's top-5 classes")


class TuneOutcome(BaseModel):
    """What ``visionbench tune`` found for one engine and precision."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    status: Literal["ok", "none-within-bound", "unsupported", "skipped", "failed"]
    reason: str | None = None
    max_latency_ms: float | None = Field(None, description="the p99 bound on one call, if any")
    budget_seconds: float = 0.0
    seconds_used: float = 0.0
    explored: int = 0
    winner: str | None = Field(None, description="id of the winner's confirming measurement")
    winner_setting: dict[str, Any] = Field(default_factory=dict)
    winner_command: str | None = Field(None, description="re-runs the winner with visionbench run")
    default: str | None = Field(None, description="id of the default setting's confirming measurement")
    default_within_bound: bool | None = None
    speedup_vs_default: float | None = None
    p_value: float | None = None
    verdict: str | None = Field(None, description="winner vs default: faster, within noise, ...")


class MlperfResult(BaseModel):
    """One LoadGen run: an engine and precision under one MLPerf scenario."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    scenario: Literal["SingleStream", "MultiStream", "Server", "Offline"]
    mode: Literal["performance", "accuracy"] = "performance"
    status: Literal["ok", "skipped", "unsupported", "failed"]
    reason: str | None = None
    validity: Literal["VALID", "INVALID"] | None = Field(None, description="LoadGen's verdict")
    compliant: bool | None = Field(
        None, description="MLPerf's minimum duration and query count kept (not --short or lowered)")
    failed_rules: list[str] = Field(default_factory=list, description="each broken rule in words")
    metric: str | None = None
    value: float | None = None
    unit: str | None = None
    latency_ms: dict[str, float] = Field(default_factory=dict, description="LoadGen's percentiles")
    queries: int | None = None
    samples_per_query: int | None = None
    target_qps: float | None = None
    target_latency_ms: float | None = None
    min_duration_s: float | None = None
    min_queries: int | None = None
    chosen: dict[str, Any] = Field(default_factory=dict, description="settings chosen, not given")
    batch_sizes: list[int] = Field(default_factory=list, description="engine sessions prepared")
    probe_ms: dict[str, float] = Field(default_factory=dict, description="one call per batch size")
    top1: float | None = Field(None, description="accuracy mode: top-1 over the labelled samples")
    samples: int | None = None
    predictions: str | None = Field(None, description="accuracy mode: each image's top-1 class")
    peak_qps: float | None = Field(None, description="Server --find-peak: the QPS found and run")
    peak_steps: list[dict[str, Any]] = Field(
        default_factory=list, description="--find-peak's short runs: QPS, latency bound met, p99")
    seconds: float = 0.0
    log_dir: str | None = Field(None, description="LoadGen's logs, relative to the run directory")


class ModelInfo(BaseModel):
    name: str
    path: str
    source: str
    sha256: str
    input_name: str
    input_layout: str
    input_shape_per_image: list[int]
    fixed_batch: int | None
    num_classes: int | None
    gflop_per_image: float | None
    notes: list[str] = Field(default_factory=list)
    preprocessing: str | None = None
    label_offset: int = 0


class Results(BaseModel):
    schema_version: int = SCHEMA_VERSION
    tool: str = "visionbench"
    kind: Literal["study", "sweep", "tune", "mlperf"] = Field(
        "study", description="study: the reference modes; sweep: throughput per batch size; "
        "tune: every configuration a search explored; mlperf: LoadGen scenarios")
    created_at: str
    finished_at: str | None = None
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    command: list[str]
    system: dict[str, Any]
    software: dict[str, str]
    config: dict[str, Any]
    model: ModelInfo
    engines_not_installed: dict[str, str] = Field(
        default_factory=dict, description="engines visionbench knows but this machine lacks: install hint"
    )
    node: dict[str, Any] | None = Field(
        None, description="visionbench fleet: the Ray node that ran this study (id, hostname, "
        "address, CPUs) and how the fleet ran (sequential or concurrent)")
    measurements: list[Measurement] = Field(default_factory=list)
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="INT8 calibration data: source, count, and how chosen")
    data: dict[str, Any] | None = Field(None, description="the image set accuracy was measured on")
    accuracy: list[Accuracy] = Field(default_factory=list)
    tune: list[TuneOutcome] = Field(default_factory=list)
    mlperf: list[MlperfResult] = Field(default_factory=list)


CSV_FIELDS = [
    "engine", "precision", "mode", "batch_size", "threads", "status", "executed_precision",
    "emulated", "quantized_ops", "instances", "cores_per_instance", "throughput_ips", "cv", "repeats",
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p999_ms", "latency_mean_ms",
    "latency_min_ms", "latency_max_ms", "latency_stdev_ms", "latency_count", "peak_rss_mib", "reason",
]


def _csv(results: Results) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for m in results.measurements:
        row = {k: getattr(m, k) for k in CSV_FIELDS if hasattr(m, k)}
        if m.latency is not None:
            for k, v in asdict(m.latency).items():
                row[f"latency_{k}"] = v
        w.writerow(row)
    return buf.getvalue()


class RunStore:
    """A run directory; ``save`` rewrites results.json and results.csv atomically."""

    def __init__(self, directory: Path, results: Results) -> None:
        self.dir = directory
        self.results = results
        try:
            (directory / RAW_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VisionbenchError(f"cannot create output directory {directory}: {e.strerror}") from e
        self.save()

    def save(self) -> None:
        try:
            atomic_write_text(self.dir / RESULTS_JSON, self.results.model_dump_json(indent=2))
            atomic_write_text(self.dir / RESULTS_CSV, _csv(self.results))
        except OSError as e:
            raise VisionbenchError(f"cannot write results in {self.dir}: {e.strerror}") from e

    def write_raw(self, measurement_id: str, windows: list[list[int]]) -> str:
        rel = f"{RAW_DIR}/{measurement_id}.json"
        atomic_write_text(self.dir / rel, json.dumps({"unit": "ns", "windows": windows}))
        return rel

    def add(self, m: Measurement) -> None:
        self.results.measurements.append(m)
        self.save()

    def add_mlperf(self, r: MlperfResult) -> None:
        self.results.mlperf.append(r)
        self.save()

    def add_tune(self, t: TuneOutcome) -> None:
        self.results.tune.append(t)
        self.save()

    def add_accuracy(self, a: Accuracy) -> None:
        self.results.accuracy.append(a)
        self.save()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Measuring: an exception (Ctrl-C included) marks the run interrupted or failed, and
        everything already measured stays on disk."""
        try:
            yield
        except KeyboardInterrupt:
            self.finish("interrupted")
            raise
        except BaseException:
            self.finish("failed")
            raise

    def finish(self, status: Literal["complete", "interrupted", "failed"]) -> None:
        self.results.status = status
        self.results.finished_at = now()
        self.save()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VisionbenchError(f"{path} is not readable JSON: {e}") from e


def invalid(path: Path, what: str, e: ValidationError) -> VisionbenchError:
    """One line for the first error of a file that does not fit its schema."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return VisionbenchError(f"{path} is not a valid {what}: {where}: {err['msg']}")


def load(run_dir: Path) -> Results:
    """A run directory's results (or a results.json path), checked against this schema version."""
    path = run_dir / RESULTS_JSON if run_dir.is_dir() else run_dir
    if not path.exists():
        what = "is not a visionbench run directory" if run_dir.is_dir() else "does not exist"
        raise VisionbenchError(f"{run_dir} {what} (no {RESULTS_JSON})")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("tool") != "visionbench":
        raise VisionbenchError(f"{path} is not a visionbench results file")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise VisionbenchError(
            f"{path} has results schema version {version!r}; this visionbench ({__version__}) "
            f"reads version {SCHEMA_VERSION}"
        )
    try:
        return Results.model_validate(data)
    except ValidationError as e:
        raise invalid(path, "visionbench results file", e) from e


def load_raw(run_dir: Path, m: Measurement) -> np.ndarray:
    """A measurement's per-inference latencies in ms, all timed windows pooled."""
    if m.raw_latencies is None:
        raise VisionbenchError(f"{m.id} in {run_dir} has no raw latencies")
    path = run_dir / m.raw_latencies
    try:
        windows = json.loads(path.read_text())["windows"]
        return np.concatenate([np.asarray(w, dtype=np.float64) for w in windows]) / 1e6
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VisionbenchError(f"cannot read the raw latencies {path}: {e}") from e


def json_schema() -> dict[str, Any]:
    return Results.model_json_schema()
