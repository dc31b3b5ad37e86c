"""The results schema (version 1; changes are additive, and every file written before still
loads): a run's system, software, configuration, model and its measurements."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    model_serializer,
    model_validator,
)

from visionbench.machine import MachineState
from visionbench.results.rundir import ended_text
from visionbench.settings import SECTIONS
from visionbench.stats import LatencySummary

SCHEMA_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CellKey(NamedTuple):
    """What a measurement measures, the same across runs: compare, fleet summaries, tables and
    figures match measurements by it, so two models or two methods never share a cell."""

    engine: str
    precision: str
    mode: str
    model: str = ""
    method: str = "reference"

    def series(self, with_model: bool = False) -> str:
        """The engine, with the model (where several are shown) and any method but the reference."""
        return (f"{self.model} " if with_model else "") + self.engine + (
            "" if self.method == "reference" else f" ({self.method} method)")


class Consumer(BaseModel):
    """A process that ran on the measured cores during a window (pid 0: time of processes that
    exited, interrupts)."""

    model_config = ConfigDict(extra="forbid")

    comm: str = Field(description="the process's name (never its command line)")
    pid: int
    cores: float = Field(description="cores' worth of CPU it used over the window (1.0: a core)")


class WindowRecord(BaseModel):
    """One timed window and what else happened on the measured cores meanwhile (shares of
    their time, 0 to 1)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="1-based, in the order the windows ran")
    instance: int | None = Field(None, description="the pinned instance that ran it")
    throughput_ips: float
    seconds: float
    disturbed: str | None = Field(None, description="why it was left out of the figure")
    waited_s: float | None = Field(None, description="seconds waited after it, for the cores to "
                                   "be quiet, before the window measured in its place")
    others: float | None = Field(None, description="CPU time of processes not visionbench's")
    steal: float | None = None
    iowait: float | None = None
    pressure: float | None = Field(None, description="share of the wall time some task waited "
                                   "for a CPU (/proc/pressure/cpu some)")
    speed: float | None = Field(None, description="the probe's speed at the window's end, "
                                "relative to the median of the process's probes")
    freq_mhz: float | None = None
    throttled: int | None = None
    top: list[Consumer] = Field(default_factory=list)
    neighbours: float | None = Field(None, description="CPU time of a fleet's other nodes on a "
                                     "machine they share (known neighbours, not a disturbance)")
    watcher_cpu_s: float | None = Field(None, description="CPU seconds the watcher's reads of "
                                        "/proc and /sys took at its edges")
    probe_s: float | None = Field(None, description="seconds the speed probe ran after it (in "
                                  "the measuring thread, outside the window)")


class InstanceResult(BaseModel):
    """One pinned instance of a multi-instance measurement."""

    model_config = ConfigDict(extra="forbid")

    index: int
    cores: list[int] = Field(description="CPUs the instance was pinned to")
    affinity: list[int] = Field(description="CPU affinity read back from the running process")
    throughput_ips: float
    throughput_per_repeat: list[float]
    latency: LatencySummary


class OutputFidelity(BaseModel):
    """One output tensor against FP32's on the same inputs."""

    model_config = ConfigDict(extra="forbid")

    output: str
    rel_error: float = Field(description="||y - y_fp32|| / ||y_fp32|| over all images")
    snr_db: float | None = Field(description="10 log10(||y_fp32||^2 / ||y - y_fp32||^2); None: "
                                 "identical to FP32")


class Fidelity(BaseModel):
    """A lower precision's outputs against the same engine's FP32 outputs on the same inputs."""

    model_config = ConfigDict(extra="forbid")

    images: int
    inputs: str = Field(description="what the images are: synthetic, or from --data")
    outputs: list[OutputFidelity]
    task: dict[str, float | None] = Field(
        default_factory=dict, description="classification: top1_agreement, top5_overlap; "
        "detection: boxes_kept, reference_boxes, mean_iou, score_error; segmentation: "
        "pixel_agreement, mean_iou")
    task_reason: str | None = Field(None, description="why no task fidelity was computed")
    flags: list[str] = Field(default_factory=list, description="figures under their threshold")
    min_snr_db: float = Field(20.0, description="the SNR under which an output is flagged: 20 dB, "
                              "or the workload's own at INT8 (depthwise networks)")
    contradiction: bool = Field(False, description="a lower precision's outputs are FP32's bit "
                                "for bit: it did not run, whatever the engine recorded")


class Memory(BaseModel):
    """Resident memory of the process that ran the measurement (summed over instances)."""

    model_config = ConfigDict(extra="forbid")

    prepared_mib: float = Field(description="held once the session and its inputs were prepared "
                                "(model, compiled state, input batches), before the warm-up")
    peak_mib: float = Field(description="the peak during the warm-up and the timed windows alone")
    method: str = Field(description="how the peak was taken")


class Energy(BaseModel):
    """Energy over the timed windows from the machine's RAPL counters, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    available: bool
    reason: str | None = Field(None, description="why energy is unavailable")
    domains: list[str] = Field(default_factory=list, description="the RAPL domains summed")
    joules: dict[str, float] = Field(default_factory=dict, description="per domain, all windows")
    joules_per_image: float | None = None
    watts: float | None = Field(None, description="average power over the timed windows")


class ColdStart(BaseModel):
    """What the measurement observed of a cold start, on the way to measuring (its session was
    prepared in a process that had already run others: ``--mode cold`` measures fresh ones)."""

    model_config = ConfigDict(extra="forbid")

    read_seconds: float | None = Field(None, description="the engine reading the model file, "
                                       "where it can be told apart from the rest")
    prepare_seconds: float = Field(description="read, quantize and compile: the session ready")
    cache: dict[str, str] = Field(default_factory=dict, description="each cached file the session "
                                  "needed: hit, built or rebuilt, with its seconds")
    first_inference_ms: float | None = Field(None, description="the first batch's latency")


class Concurrency(BaseModel):
    """What an engine ran at once, read back: its parallel executors (OpenVINO's streams,
    concurrent sessions), the batches kept in flight on them, and the engine's words for them."""

    model_config = ConfigDict(extra="forbid")

    executors: int = 1
    in_flight: int = 1
    text: str = ""


#: Format history (the schema stays version 1: every change is additive, and these fill what
#: files written before lack, in one place):
#: - 0.1 -> 0.2: a measurement's ``concurrency`` and a tuned setting's ``options`` and
#:   ``concurrency`` were only in the engine's own words: OpenVINO's ``num_streams`` and
#:   ``requests_in_flight`` details, concurrent sessions' ``sessions``; a setting's ``streams`` and
#:   ``requests`` keys.
def _concurrency_of(details: dict[str, Any]) -> dict[str, Any] | None:
    if "sessions" in details:
        n = int(details["sessions"])
        return {"executors": n, "in_flight": n, "text": f"{n} sessions"}
    if "num_streams" in details or "requests_in_flight" in details:
        streams = int(details.get("num_streams") or 1)
        requests = int(details.get("requests_in_flight") or 1)
        words = [f"{streams} streams"] if streams > 1 else []
        words += [f"{requests} requests"] if requests > 1 else []
        return {"executors": streams, "in_flight": requests, "text": ", ".join(words)}
    return None


def _setting_of(setting: dict[str, Any]) -> dict[str, Any]:
    if "options" in setting or not ({"streams", "requests"} & set(setting)):
        return setting
    out = {k: v for k, v in setting.items() if k not in ("streams", "requests")}
    streams, requests = setting.get("streams"), setting.get("requests")
    out["options"] = {k: v for k, v in (("streams", streams), ("requests", requests)) if v}
    out["concurrency"] = ", ".join([f"{streams} streams"] * bool(streams)
                                   + [f"{requests} requests"] * bool(requests))
    return out


class Measurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("concurrency") is None and data.get("engine_details"):
            data = {**data, "concurrency": _concurrency_of(data["engine_details"])}
        return data

    id: str
    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    mode: Literal["throughput", "latency"]
    model: str | None = Field(None, description="the model measured (None in files written before "
                              "0.2: the run's model)")
    method: str = Field("reference", description="how it was measured: reference = the study's "
                        "method (one process, one synchronous request, the reference batch); "
                        "engine = the engine's own configuration for the mode (OpenVINO: its "
                        "THROUGHPUT hint with its optimal number of requests in flight)")
    engine_method: str | None = Field(
        None, description="where the engine's own configuration for the mode is this reference "
                          "measurement's (so no engine-method row was measured apart): why")
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
    concurrency: Concurrency | None = Field(
        None, description="what the engine ran at once, read back (None: not told)")
    throughput_ips: float | None = Field(None, description="images/s, median of repeats")
    throughput_per_repeat: list[float] = Field(
        default_factory=list, description="images/s of each clean window (every window where "
                                          "none was clean)")
    throughput_ci95: tuple[float, float] | None = Field(
        None, description="95% confidence interval of the windows' mean images/s (Student's t)")
    cv: float | None = Field(None, description="coefficient of variation of repeat throughputs")
    latency: LatencySummary | None = Field(None, description="pooled over the clean windows")
    windows: list[WindowRecord] = Field(
        default_factory=list, description="every timed window, with what the watcher saw; "
                                          "disturbed ones are left out of the figures")
    clean_windows: int | None = Field(None, description="windows the figures are made of")
    disturbed: bool = Field(False, description="fewer clean windows than the repeats asked "
                                               "for: the allowance of extra windows ran out")
    raw_latencies: str | None = Field(None, description="JSON file of per-window latencies (ns)")
    repeats: int = 0
    warmup_iterations: int = 0
    warmup_seconds: float = 0.0
    timed_iterations: int = 0
    timed_seconds: float = 0.0
    prepare_seconds: float = 0.0
    peak_rss_mib: float | None = Field(None, description="older files only: the process's peak "
                                       "so far (ru_maxrss), earlier measurements included")
    memory: Memory | None = None
    energy: Energy | None = None
    cold_start: ColdStart | None = None
    ran_in: str | None = Field(None, description="the process that measured it: the engine's "
                               "worker process (--isolation engine), a worker process of its "
                               "own (--isolation measurement) or the main process")
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
    environment: dict[str, Any] | None = Field(
        None, description="the measuring process's environment, read inside it: the allocator and "
                          "OpenMP runtime asked for (--allocator, --omp-runtime) and --env's "
                          "variables; the libraries serving malloc and OpenMP's entry points "
                          "(malloc_from, openmp_from); the allocator, OpenMP and TBB libraries "
                          "mapped; the runtimes' variables set")
    warnings: list[str] = Field(default_factory=list)
    fidelity: Fidelity | None = Field(None, description="BF16 and INT8: the outputs' fidelity to "
                                      "the same engine's FP32 on the same inputs")
    resumed: bool = Field(False, description="measured by visionbench resume, after the run "
                          "had stopped")
    started_at: str
    finished_at: str

    @property
    def key(self) -> str:
        return self.id


def accuracy_key(engine: str, precision: str) -> str:
    return f"accuracy-{engine}-{precision}"


def tune_key(engine: str, precision: str) -> str:
    return f"tune-{engine}-{precision}"


def mlperf_key(engine: str, precision: str, scenario: str, method: str = "reference") -> str:
    return f"mlperf-{engine}-{precision}-{scenario}" + ("" if method == "reference" else f"-{method}")


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
    resumed: bool = False

    @property
    def key(self) -> str:
        return accuracy_key(self.engine, self.precision)


def engine_key(kind: str, engine: str, precision: str, model: str | None) -> str:
    """A per-engine record's key: its kind, a suite's workload, the engine and precision."""
    return f"{kind}-{model + '-' if model else ''}{engine}-{precision}"


def cold_key(engine: str, precision: str, model: str | None = None) -> str:
    return engine_key("cold", engine, precision, model)


class Spread(BaseModel):
    """A figure over several fresh processes."""

    model_config = ConfigDict(extra="forbid")

    median: float
    min: float
    max: float


class EngineRecord(BaseModel):
    """A record per engine and precision (and a suite's workload), whatever the modes."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    model: str | None = Field(None, description="a suite's workload")
    status: Literal["ok", "skipped", "unsupported", "failed"]
    reason: str | None = None


class ColdStartRun(EngineRecord):
    """``--mode cold``: one engine and precision started in several fresh processes, each timed
    from its start to its first answer."""

    processes: int = 0
    file_cache: str | None = Field(None, description="the OS file cache: warm, or dropped before "
                                   "each process")
    quantization: str | None = Field(None, description="INT8: read from visionbench's cache, or "
                                     "re-run in each process (--no-cache)")
    phases: dict[str, Spread] = Field(
        default_factory=dict, description="seconds (first_inference: ms) of start (the process "
        "up, visionbench imported), import (the engine's runtime), read, prepare (read, quantize, "
        "compile), first_inference and total (start to first answer)")
    per_process: list[dict[str, float | None]] = Field(default_factory=list)
    peak_rss_mib: float | None = Field(None, description="median of the processes' peaks")
    cache: dict[str, str] = Field(default_factory=dict, description="the first process's cached "
                                  "files: hit, built or rebuilt, with seconds")
    resumed: bool = False
    started_at: str
    finished_at: str

    @property
    def key(self) -> str:
        return cold_key(self.engine, self.precision, self.model)


def profile_key(engine: str, precision: str, model: str | None = None) -> str:
    return engine_key("profile", engine, precision, model)


class OpRow(BaseModel):
    """One executed operation of a profile."""

    name: str
    op_type: str
    ms: float = Field(description="milliseconds per call: the median over the profiled calls, "
                      "or their mean where the profiler keeps only that (OpenVINO)")
    share: float = Field(description="of the operations' summed time")
    precision: str = Field("", description="what it computed in, where the engine says")
    kernel: str = Field("", description="the engine's kernel or primitive")
    flops: float | None = Field(None, description="arithmetic operations per call (a multiply and "
                                "an add count two) of a convolution or matrix product, from the "
                                "shapes the engine ran it with, or the profiler's own count")
    bytes: float | None = Field(None, description="bytes it reads and writes at the least (inputs, "
                                "weights, outputs once), where the engine gives them")


class ProfileRun(EngineRecord):
    """``--mode profile``: one engine and precision at batch 1, one synchronous request, profiled
    by the engine's own profiler in calls of their own after unprofiled ones."""

    batch_size: int = 1
    calls: int = 0
    source: str = Field("", description="the profiler")
    p50_ms: float | None = Field(None, description="median latency of the unprofiled calls")
    profiled_p50_ms: float | None = Field(None, description="median latency of the profiled calls")
    ops_ms: float | None = Field(None, description="the operations' median times summed")
    coverage: float | None = Field(None, description="how much of a call the operations account "
                                   "for: the median over the profiled calls of each call's "
                                   "operations summed over that call's latency, or, where the "
                                   "profiler keeps means only, their sum over the calls' mean")
    consistent: bool | None = Field(None, description="coverage within 10% of 1, allowing each "
                                    "operation the profiler's resolution")
    ms_added_by_profiler: float | None = Field(None, description="what the profiler adds to a "
                                               "call: profiled_p50_ms minus p50_ms (below 0 "
                                               "where noise outweighs it)")
    compute_ms: float | None = Field(None, description="ms per call of the convolutions and matrix "
                                     "products whose FLOPs are known")
    compute_flops: float | None = Field(None, description="their arithmetic operations per call")
    flops_from: str = Field("", description="where compute_flops comes from: each operation's "
                            "shapes, the profiler's own count, or the model's graph per "
                            "operation type; empty where not known")
    unplaced_ms: float | None = Field(None, description="of the profiled call, the time no "
                                      "operation holds (the framework between operations, the "
                                      "call itself): profiled_p50_ms x (1 - coverage)")
    ops: list[OpRow] = Field(default_factory=list, description="slowest first")
    by_type: dict[str, float] = Field(default_factory=dict, description="ms per operation type, "
                                      "slowest first")
    by_group: dict[str, float] = Field(default_factory=dict, description="ms per group of "
                                       "operation types across engines (convolutions and matrix "
                                       "products, layout conversions, quantize and dequantize, "
                                       "pooling, normalisation, other operations)")
    by_precision: dict[str, float] = Field(default_factory=dict, description="ms per executed "
                                           "precision ('' where the engine says none)")
    files: list[str] = Field(default_factory=list, description="the profiler's files (a trace, "
                             "an executed graph), relative to the run directory")
    notes: list[str] = Field(default_factory=list)
    started_at: str
    finished_at: str

    @property
    def key(self) -> str:
        return profile_key(self.engine, self.precision, self.model)


class Percentiles(BaseModel):
    """Milliseconds per image over a pipeline run's images."""

    model_config = ConfigDict(extra="forbid")

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float


class PipelineThreads(BaseModel):
    """One pass of the whole pipeline with ``threads`` decode-and-preprocess workers."""

    model_config = ConfigDict(extra="forbid")

    threads: int
    images: int
    batches: int
    queue_size: int = Field(description="images the bounded queue holds")
    images_per_second: float = Field(description="end to end: images over the seconds from the "
                                     "first decode's start to the last post-processing's end")
    end_to_end: Percentiles = Field(description="per image, its decode's start to its batch's "
                                    "post-processing's end")
    stages: dict[str, Percentiles] = Field(description="per stage: decode, preprocess, queue, "
                                           "batch, feed, inference, postprocess")
    accounted: Spread = Field(description="per image, the stages' sum over its end to end")
    candidates: Spread | None = Field(None, description="a detector's candidates per image that "
                                      "reached non-maximum suppression")
    detections: Spread | None = Field(None, description="a detector's boxes kept per image")


def pipeline_key(engine: str, precision: str, model: str | None = None) -> str:
    return engine_key("pipeline", engine, precision, model)


class PipelineRun(EngineRecord):
    """``--mode pipeline``: one engine and precision running the whole pipeline (JPEG decode,
    preprocessing on worker threads, a bounded queue, batching, feed, inference,
    post-processing) in a fresh process, beside inference alone in the same session."""

    batch_size: int = 1
    task: str = ""
    decoder: str = Field("", description="the JPEG decoder and its version")
    decoder_note: str = Field("", description="why it is not the first choice, where it is not")
    images_source: str = Field("", description="the photos: the shipped ones or --data's")
    photos: int = 0
    preprocessing: str = ""
    postprocessing: str = ""
    weights: str = Field("", description="the weights the model ran with: seeded (untrained) or "
                         "a file")
    inference_only_ips: float | None = Field(None, description="images per second of inference "
                                             "alone: the same session, batch and fed tensor, "
                                             "back-to-back calls")
    inference_only: Percentiles | None = Field(None, description="per call")
    runs: list[PipelineThreads] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    started_at: str
    finished_at: str

    @property
    def key(self) -> str:
        return pipeline_key(self.engine, self.precision, self.model)


#: A point's share of the generator's ceiling above which the client may be what limits it.
CEILING_SHARE = 0.5


class LoadPoint(BaseModel):
    """``visionbench loadtest``: one point of a sweep against a KServe v2 server, as the client
    saw it (closed loop: ``concurrency`` users, each sending its next request when the last
    answered)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    protocol: Literal["http", "grpc"]
    model: str
    concurrency: int = Field(description="closed loop: the users; poisson: the connections the "
                             "requests are sent on")
    mode: Literal["closed", "poisson"] = Field(
        "closed", description="closed: users sending back to back; poisson: LoadGen's Server "
        "scenario at target_qps (open loop)")
    target_qps: float | None = None
    valid: bool | None = Field(None, description="poisson: LoadGen's verdict")
    loadgen: dict[str, Any] = Field(default_factory=dict, description="poisson: LoadGen's own "
                                    "figures and the rules it found broken")
    status: Literal["ok", "failed"]
    reason: str | None = None
    window_s: float = Field(description="the timed window, after the warm-up")
    warmup_s: float = 0.0
    requests: int = Field(0, description="requests that completed within the window")
    images_per_request: int = 1
    throughput_ips: float | None = Field(None, description="images per second over the window")
    throughput_ci: tuple[float, float] | None = Field(
        None, description="95% interval of the throughput, from the window's equal parts")
    latency: LatencySummary | None = Field(None, description="per request, send to answer, "
                                           "with 95% intervals")
    errors: dict[str, int] = Field(default_factory=dict, description="failed requests by kind")
    error_messages: dict[str, str] = Field(default_factory=dict, description="the first "
                                           "message of each kind of error, cut short")
    client_cpu_cores: float = Field(0.0, description="the generator's own CPU time over the "
                                    "window, in cores (servers loaded together share one "
                                    "generator: each of their points gives its whole)")
    knee: bool = Field(False, description="the highest throughput whose p99 stays within 2x "
                       "the lowest concurrency's p99 (of this protocol)")
    ceiling_share: float | None = Field(
        None, description="throughput over the generator's ceiling: the best throughput of the "
        "no-op model (ceiling_model) on the same server and protocol in this run; above 0.5 the "
        "client may be the limit")
    ceiling_model: str | None = None
    server_requests: int | None = Field(None, description="requests the server counted in the "
                                        "window (Triton's statistics extension, where offered)")
    server_ms: dict[str, float] = Field(
        default_factory=dict, description="the server's own mean ms per request over the window "
        "(Triton's statistics extension): success (in the model server's predict), queue, "
        "compute_input, compute_infer, compute_output")
    server: dict[str, Any] = Field(default_factory=dict, description="what the server says of "
                                   "itself (v2 server metadata) and, from visionbench serve, "
                                   "its engine, precision and configuration (and its cluster "
                                   "node, from serve --address)")
    together: list[str] = Field(default_factory=list, description="the servers loaded at the "
                                "same time, this one's URL included, each by its own users "
                                "(several URLs given); empty: this server alone")
    started_at: str
    finished_at: str

    @property
    def key(self) -> str:
        return loadtest_key(self.protocol, self.model, self.concurrency, self.target_qps
                            if self.mode == "poisson" else None,
                            self.url if self.together else None)


def loadtest_key(protocol: str, model: str, concurrency: int, qps: float | None = None,
                 url: str | None = None) -> str:
    """A point's key; ``url``: the server's, where several were loaded together."""
    at = "" if url is None else "-at-" + "".join(c if c.isalnum() else "-" for c in
                                                  url.split("://", 1)[-1])
    return (f"loadtest-{protocol}-{model}-" + (f"c{concurrency}" if qps is None else f"qps{qps:g}")
            + at)


class TuneOutcome(BaseModel):
    """What ``visionbench tune`` found for one engine and precision. A setting is a dict of
    batch_size, instances, cores_per_instance, threads, method, options (the engine's, as given
    to it) and concurrency (the engine's words for them)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("winner_setting", "default_setting"):
            if isinstance(data.get(key), dict):
                data[key] = _setting_of(data[key])
        if isinstance(data.get("confirmed"), list):
            data["confirmed"] = [_setting_of(c) if isinstance(c, dict) else c
                                 for c in data["confirmed"]]
        return data

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    status: Literal["ok", "none-within-bound", "unsupported", "skipped", "failed"]
    reason: str | None = None
    max_latency_ms: float | None = Field(None, description="the p99 bound on one call, if any")
    budget_seconds: float = 0.0
    seconds_used: float = 0.0
    explored: int = 0
    winner: str | None = Field(None, description="id of the winner's (first) confirming measurement")
    winner_setting: dict[str, Any] = Field(default_factory=dict)
    winner_command: str | None = Field(None, description="re-runs the winner with visionbench run")
    default: str | None = Field(None, description="id of the default setting's (first) confirming "
                                "measurement: the engine's own throughput configuration where it "
                                "has one (benchmark_app's), else what visionbench run measures")
    default_setting: dict[str, Any] = Field(default_factory=dict)
    default_within_bound: bool | None = None
    speedup_vs_default: float | None = Field(
        None, description="median over the confirmation rounds of winner / default images/s")
    p_value: float | None = None
    verdict: str | None = Field(None, description="winner vs default: faster, within noise, ...")
    verdict_reason: str | None = None
    winner_ips: float | None = Field(None, description="median images/s over the rounds")
    default_ips: float | None = Field(None, description="median images/s over the rounds")
    rounds: int = Field(0, description="confirmation rounds: every setting once per round, in an "
                                       "order that changes between rounds")
    confirmed: list[dict[str, Any]] = Field(
        default_factory=list, description="per setting re-measured: tag, setting, images/s per "
                                          "round, ratio to the default per round, medians")
    left_out: list[str] = Field(default_factory=list,
                                description="settings not explored, with the reason")

    @property
    def key(self) -> str:
        return tune_key(self.engine, self.precision)


class MlperfResult(BaseModel):
    """One LoadGen run: an engine and precision under one MLPerf scenario."""

    model_config = ConfigDict(extra="forbid")

    engine: str
    precision: Literal["fp32", "bf16", "int8"]
    scenario: Literal["SingleStream", "MultiStream", "Server", "Offline"]
    method: str = Field("reference", description="reference: the engine's sessions as the study's "
                        "reference method prepares them (with any engine option given); engine: "
                        "the engine's own configuration for the scenario's mode")
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
    requests_in_flight: int | None = Field(
        None, description="requests the system under test kept in flight on each session")
    engine_details: dict[str, Any] = Field(
        default_factory=dict, description="what the engine read back for the largest batch's "
        "session (OpenVINO: streams, requests, hints)")
    probe_ms: dict[str, float] = Field(default_factory=dict, description="one call per batch size")
    top1: float | None = Field(None, description="accuracy mode: top-1 over the labelled samples")
    samples: int | None = None
    predictions: str | None = Field(None, description="accuracy mode: each image's top-1 class")
    peak_qps: float | None = Field(None, description="Server --find-peak: the QPS found and run")
    peak_steps: list[dict[str, Any]] = Field(
        default_factory=list, description="--find-peak's short runs: QPS, latency bound met, p99")
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return mlperf_key(self.engine, self.precision, self.scenario, self.method)
    log_dir: str | None = Field(None, description="LoadGen's logs, relative to the run directory")


class PeakRate(BaseModel):
    """One precision's peak on this machine (``harness.peak``)."""

    gops: float = Field(description="billions of arithmetic operations a second (a multiply and "
                        "an add count two), every available core at once: the best clean window")
    isa: str = Field(description="the instructions that reached it")
    threads: int
    windows: list[float] = Field(default_factory=list, description="each clean window's rate")
    disturbed: int = Field(0, description="windows set aside as disturbed and measured again")


class Bandwidth(BaseModel):
    """The machine's memory bandwidth (``harness.peak``)."""

    gbs: float = Field(description="GB/s (10^9 bytes) every available core reaches at once: the "
                       "best clean window")
    threads: int
    array_mib: int = Field(description="MiB of each of the three arrays, split between the threads")
    windows: list[float] = Field(default_factory=list, description="each clean window's GB/s")
    disturbed: int = Field(0, description="windows set aside as disturbed and measured again")
    method: str = ""


class MachinePeak(BaseModel):
    """The machine's peak arithmetic rate per precision and its memory bandwidth, measured once
    and cached."""

    rates: dict[str, PeakRate] = Field(default_factory=dict)
    bandwidth: Bandwidth | None = Field(None, description="absent in files before 2026-12-05")
    notes: list[str] = Field(default_factory=list, description="what was not measured, and why")
    key: str = ""
    measured_at: str = ""
    cached: bool = Field(False, description="measured by an earlier run on this machine")


class SystemFacts(BaseModel):
    """The machine a run measured on (``sysinfo.system_info``). Every field has a default, as any
    object was accepted here before it was typed; facts added later are kept."""

    model_config = ConfigDict(extra="allow")

    hostname: str = "unknown"
    cpu_model: str = "unknown"
    cpu_vendor: str | None = None
    cpu_family_model_stepping: str | None = None
    sockets: int | None = None
    physical_cores: int | None = None
    logical_cpus: int | None = None
    cpus_available: int | None = None
    numa_nodes: int | None = None
    isa_flags: list[str] = Field(default_factory=list)
    bf16_native: bool | None = None
    int8_vnni: bool | None = None
    hypervisor: bool | None = None
    memory_total_gib: float | None = None
    os: str | None = None
    kernel: str | None = None
    python: str | None = None
    state: MachineState | None = Field(None, description="the machine's state at the run's "
                                       "start (governor, boost, SMT, huge pages, steal, pressure, "
                                       "load, busy processes; hidden: what it does not show)")
    peak: MachinePeak | None = Field(None, description="the peak arithmetic rate per precision "
                                     "that figures are compared with")


def _flat_options_schema(schema: dict[str, Any]) -> None:
    """The JSON schema of the file as written: the engines' options flat beside the settings."""
    options = schema["properties"].pop("engine_options")
    schema["additionalProperties"] = options["additionalProperties"]


class _StoredSettings(BaseModel):
    """What every settings record holds beside the sections' fields: the output and its policy,
    the reference batch sizes, and the engines' own options, written flat (as results.json has
    always had them: ``streams``, ``hint``, ...) and read back into ``engine_options``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_flat_options_schema)

    output: str | None = None
    existing: str = "refuse"
    replace_records: bool = False
    reference_batch: dict[str, int] = Field(default_factory=dict)
    engine_options: dict[str, int | float | str | bool | None] = Field(
        default_factory=dict, description="The engines' own options by name (None: not given); "
                                          "stored flat beside the other settings.")

    @model_validator(mode="before")
    @classmethod
    def _gather_engine_options(cls, data: Any) -> Any:
        """Keys that are no declared setting are the engines' options (``Engine.options``)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        options = dict(data.pop("engine_options", None) or {})
        for key in [k for k in data if k not in cls.model_fields]:
            options[key] = data.pop(key)
        return {**data, "engine_options": options}

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        d = handler(self)
        d.update(d.pop("engine_options", {}))
        return d


def _stored_type(hint: Any) -> Any:
    """A setting's type as results.json holds it: paths as text."""
    return {Path: str, Path | None: str | None}.get(hint, hint)


def _settings_model() -> type[_StoredSettings]:
    """``RunSettings``: every field of the run's setting sections (``visionbench.settings``),
    typed, with its default, and what every record holds beside them."""
    fields: dict[str, Any] = {}
    for section in SECTIONS.values():
        hints = get_type_hints(section)
        for f in dataclasses.fields(section):
            if f.name in _StoredSettings.model_fields:
                continue
            default = (Field(default_factory=f.default_factory)
                       if f.default is dataclasses.MISSING else f.default)
            fields[f.name] = (_stored_type(hints[f.name]), default)
    return create_model("RunSettings", __base__=_StoredSettings, __module__=__name__,
                        __doc__="What a run was asked to do, as ``config.RunConfig`` held it "
                                "(paths as text), with the INT8 calibration samples resolved.",
                        **fields)


RunSettings = _settings_model()


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
    task: str = "classification"
    outputs: list[str] = Field(default_factory=list)


class Invocation(BaseModel):
    """One command that wrote into the run: the one that made it, each ``--append`` and each
    ``visionbench resume``."""

    model_config = ConfigDict(extra="allow")

    how: Literal["new", "overwrite", "append", "resume"]
    kind: str
    command: list[str]
    config: RunSettings
    started_at: str
    finished_at: str | None = None
    status: str = "running"
    #: ``resume``: the planned records it found missing or failed, by key.
    resumed: list[str] = Field(default_factory=list)
    #: Every record this command planned, by key: the run is complete only once each
    #: invocation's are there (empty in files written before they were recorded).
    planned: list[str] = Field(default_factory=list)


class ResultsBase(BaseModel):
    """A run, but its records: ``kinds.Results`` adds a list field per record kind declared in
    ``kinds.KINDS`` (measurements, accuracy, tune, mlperf, cold, and any declared later)."""

    #: The record kinds, set by ``kinds`` on the model it makes.
    kinds: ClassVar[tuple[Any, ...]] = ()

    schema_version: int = SCHEMA_VERSION
    tool: str = "visionbench"
    kind: Literal["study", "sweep", "tune", "mlperf", "suite", "loadtest"] = Field(
        "study", description="study: the reference modes; sweep: throughput per batch size; "
        "tune: every configuration a search explored; mlperf: LoadGen scenarios; suite: the "
        "study on each of several workloads (models); loadtest: a sweep against a served model")
    created_at: str
    finished_at: str | None = None
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    command: list[str]
    system: SystemFacts
    software: dict[str, str]
    config: RunSettings
    model: ModelInfo = Field(description="the model (a suite: its first workload's)")
    models: list[ModelInfo] = Field(default_factory=list, description="a suite: every workload's "
                                    "model, each measurement naming its own")
    suite_version: int | None = Field(None, description="a suite: the version of its workload "
                                      "set; suite scores compare only within one version")
    engines_not_installed: dict[str, str] = Field(
        default_factory=dict, description="engines visionbench knows but this machine lacks: install hint"
    )
    node: dict[str, Any] | None = Field(
        None, description="visionbench fleet: the Ray node that ran this study (id, hostname, "
        "address, CPUs) and how the fleet ran (sequential or concurrent)")
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="INT8 calibration data: source, count, and how chosen")
    data: dict[str, Any] | None = Field(None, description="the image set accuracy was measured on")
    invocations: list[Invocation] = Field(
        default_factory=list, description="every command that wrote into this run, in order "
        "(none in files written before 0.3: the run's own command and config)")

    def history(self) -> list[Invocation]:
        """The commands that wrote into the run; for a file written before they were recorded,
        its own command and configuration."""
        return self.invocations or [Invocation(
            how="new", kind=self.kind, command=self.command, config=self.config,
            started_at=self.created_at, finished_at=self.finished_at, status=self.status)]

    def records(self) -> dict[str, str]:
        """Every stored record's key (a measurement's id; accuracy-, tune-, mlperf- keys for the
        others) and its status, over every record kind."""
        return {r.key: r.status for kind in self.kinds for r in getattr(self, kind.field)}

    def key(self, m: Measurement) -> CellKey:
        return CellKey(m.engine, m.precision, m.mode, m.model or self.model.name, m.method)

    #: The run directory these results were stored in or loaded from (not part of the file).
    _directory: Path | None = PrivateAttr(default=None)

    @property
    def directory(self) -> Path | None:
        return self._directory

    @directory.setter
    def directory(self, path: Path) -> None:
        self._directory = path

    #: Loaded while recorded as running, with nobody writing it: when its writer last wrote.
    _stopped_at: float | None = PrivateAttr(default=None)

    @property
    def state(self) -> str:
        """The status in words: "ended without finishing" where a running run's writer is gone."""
        return ended_text(self._stopped_at) if self._stopped_at is not None else self.status



