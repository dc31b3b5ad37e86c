"""OpenVINO CPU plugin: FP32 and BF16 by inference-precision hint, INT8 by NNCF post-training
quantization (cached)."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from visionbench.cache import cached
from visionbench.data.calibration import Calibration
from visionbench.engines.base import (
    DTYPE_PRECISION,
    Concurrency,
    Engine,
    EngineOption,
    Execution,
    KnobVerdict,
    OpProfile,
    OpTime,
    Precision,
    Session,
    SessionSpec,
    Support,
    Variant,
    by_precision,
    cpu_support,
    dominant_precision,
    laid_end_to_end,
)
from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import cache_dir
from visionbench.models.flops import op_flops
from visionbench.models.spec import ModelSpec
from visionbench.sysinfo import CpuFeatures

# The layer types whose runtime precision says what precision the network really ran at.
_COMPUTE_LAYERS = {"Convolution", "FullyConnected", "MatMul", "GroupConvolution"}


def _quantize(model: ModelSpec, calibration: Calibration) -> Path:
    """NNCF post-training quantization of the model, cached by model hash and calibration set."""
    path = cache_dir() / "int8" / (
        f"openvino-{model.sha256[:16]}-{calibration.key}-nncf{version('nncf')}.xml"
    )

    def build(path: Path) -> None:
        import nncf
        import openvino as ov

        ov_model = ov.Core().read_model(str(model.path))
        logging.getLogger("nncf").setLevel(logging.ERROR)
        # NNCF draws its own progress bars; an engine does not print.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # A transformer gets NNCF's transformer scheme (attention's own products and
            # softmax kept in float, as its authors advise).
            quantized = nncf.quantize(
                ov_model, nncf.Dataset(list(calibration)), subset_size=calibration.count,
                model_type=nncf.ModelType.TRANSFORMER if model.transformer else None,
            )
        # OpenVINO writes with its own code (following links): into a folder made for it now,
        # then renamed into place, the .xml last: its appearing means both files are whole.
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent)) / path.name
        try:
            ov.save_model(quantized, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        except RuntimeError as e:  # a full disk reads "basic_ios::clear: iostream error"
            free = shutil.disk_usage(path.parent).free / 2**20
            raise VisionbenchError(f"OpenVINO could not write the INT8 model into {path.parent} "
                                   f"({free:.0f} MiB free there): {describe(e)}") from e
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)

    return cached(path, "OpenVINO INT8 model (NNCF)", build, [path.with_suffix(".bin").name])


class _Waiter:
    """A thread that waits, with the GIL released, for each batch started on one infer request,
    then calls that batch's completion (or keeps the request's error for the session to raise)."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self._started: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._wait, name="openvino-request", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        while (done := self._started.get()) is not None:
            try:
                self._request.wait()
            except BaseException as e:  # raised by the session; the completion must still come
                self.error = e
            done()

    def started(self, done: Callable[[], None]) -> None:
        self._started.put(done)

    def stop(self) -> None:
        self._started.put(None)
        self._thread.join()


class OpenVINOSession(Session):
    """Infer requests of the full batch on the compiled model: the first runs synchronous calls;
    all of them run asynchronously, each on whichever stream is free, when the harness keeps
    several in flight.

    No Python callback is set on a request. OpenVINO holds one in a shared pointer that takes the
    GIL when its last copy is freed, and that copy can be a stream thread's, freed after
    ``wait()`` has returned: freeing the compiled model (which joins the stream threads) with the
    GIL held then waited for ever (once in 12 ``tune`` runs here beside a busy process). Each
    request's completion is reported by a Python thread of its own waiting on it instead."""

    def __init__(self, compiled: Any, output_name: str, execution: Execution, requests: int) -> None:
        self._requests = [compiled.create_infer_request() for _ in range(requests)]
        self._waiters: list[_Waiter] = []
        self._output = next((o for o in compiled.outputs if output_name in o.get_names()),
                            compiled.output(0))
        self._compiled = compiled
        #: Inferences started on the compiled model: its performance counters average them all.
        self._inferences = 0
        self.execution = execution
        self.requests = requests

    def run(self, batch: Any) -> np.ndarray:
        self._inferences += 1
        return self._requests[0].infer({0: batch}, share_inputs=True)[self._output]

    def run_outputs(self, batch: Any) -> list[np.ndarray]:
        return self.run_on(0, batch)

    def run_on(self, slot: int, batch: Any) -> list[np.ndarray]:
        self._inferences += 1
        return list(self._requests[slot].infer({0: batch}, share_inputs=True).to_tuple())

    def start(self, slot: int, batch: Any, done: Callable[[], None]) -> None:
        if not self._waiters:
            self._waiters = [_Waiter(r) for r in self._requests]
        self._raise_error()
        self._inferences += 1
        self._requests[slot].start_async({0: batch}, share_inputs=True)
        self._waiters[slot].started(done)

    def profile(self, batch: Any, calls: int, warmup: int) -> OpProfile:
        """The CPU plugin's performance counters (compiled with ``enable_profiling``): each
        operation's mean over ``calls``; the executed graph as OpenVINO serializes it, and the
        counters as a trace (laid end to end in execution order: they carry no start times).

        The plugin keeps per operation a running mean, in whole microseconds, of every inference
        since compilation (benchmark_app's ``-pc`` prints it), never one call's time: the mean
        of the timed calls alone is the difference of the totals before and after them."""
        import openvino as ov
        import openvino.properties as props

        if str(self._compiled.get_property(props.enable_profiling)) not in ("YES", "True"):
            raise NotImplementedError("this OpenVINO model was not compiled for profiling")
        if int(self._compiled.get_property(props.num_streams)) != 1:
            raise NotImplementedError("OpenVINO's counters are per stream: a profile needs one")
        for _ in range(warmup):
            self.run(batch)
        before, counted = self._counters(ov), self._inferences
        call_ms = []
        for _ in range(calls):
            t = time.perf_counter()
            self.run(batch)
            call_ms.append((time.perf_counter() - t) * 1e3)
        after = self._counters(ov)
        graph = self._compiled.get_runtime_model()
        precisions, costs = {}, {}
        for op in graph.get_ordered_ops():
            dtype = op.get_rt_info()["runtimePrecision"].astype(str)
            precisions[op.get_friendly_name()] = DTYPE_PRECISION.get(dtype, "")
            costs[op.get_friendly_name()] = _costs(op)
        ops = []
        for name, (kind, kernel, mean_us) in after.items():
            total_us = mean_us * self._inferences - before.get(name, ("", "", 0))[2] * counted
            ops.append(OpTime(name, kind, max(total_us, 0) / calls / 1e3, precisions.get(name, ""),
                              kernel, *costs.get(name, (None, None))))
        with tempfile.TemporaryDirectory(prefix="visionbench-exec-graph-") as tmp:
            xml = Path(tmp) / "graph.xml"
            ov.serialize(graph, str(xml), str(Path(tmp) / "graph.bin"))
            files = {"openvino-exec-graph.xml": xml.read_bytes()}
        files["openvino-trace.json"] = laid_end_to_end(ops, "OpenVINO performance counters",
                                                       "mean")
        # Each call's time per operation truncated to a microsecond, and each running mean too:
        # the difference of two totals so rebuilt is off by up to (inferences / calls) µs.
        return OpProfile(ops, call_ms, None, "OpenVINO CPU plugin performance counters (real "
                         "time, mean over the calls)", files,
                         resolution_ms=1e-3 * (1 + self._inferences / calls),
                         flops_from="the executed graph's shapes")

    def _counters(self, ov: Any) -> dict[str, tuple[str, str, int]]:
        """Each executed operation's (type, kernel, running mean in µs) as the plugin has it."""
        return {info.node_name: (info.node_type, info.exec_type,
                                 round(info.real_time.total_seconds() * 1e6))
                for info in self._requests[0].get_profiling_info()
                if info.status == ov.ProfilingInfo.Status.EXECUTED}  # not fused, not a constant

    def _raise_error(self) -> None:
        error = next((w.error for w in self._waiters if w.error is not None), None)
        if error is not None:
            raise error

    def close(self) -> None:
        for waiter in self._waiters:  # each waits on what its request still runs, then ends
            waiter.stop()
        self._raise_error()


def _costs(op: Any) -> tuple[float | None, float | None]:
    """An executed-graph operation's FLOPs from the shapes it ran with, and the bytes of its
    inputs (weights included) and output at their element types; None where a shape is dynamic."""
    ports = [op.input(i) for i in range(op.get_input_size())] + [op.output(0)]
    if op.get_output_size() == 0 or not all(p.get_partial_shape().is_static for p in ports):
        return None, None
    shapes = [list(p.get_partial_shape().to_shape()) for p in ports]
    layer = op.get_rt_info()["layerType"].astype(str)
    return (op_flops(layer, shapes[:-1], shapes[-1]),
            float(sum(math.prod(s) * p.get_element_type().size
                      for s, p in zip(shapes, ports, strict=True))))


def _runtime_precisions(compiled: Any) -> Counter[str]:
    """Per compute layer type, the precision the CPU plugin really executed."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in _COMPUTE_LAYERS:
            counts[f"{layer}:{info['runtimePrecision'].astype(str)}"] += 1
    return counts


def _concurrency(streams: int, requests: int) -> Concurrency:
    words = [f"{streams} streams"] if streams > 1 else []
    words += [f"{requests} requests"] if requests > 1 else []
    return Concurrency(streams, requests, ", ".join(words))


class OpenVINOEngine(Engine):
    name = "openvino"
    module = "openvino"
    extra = "openvino"
    #: Read after a run: openvino/libs/libtbb.so.12 (and libtbbmalloc) mapped, no OpenMP runtime.
    threading = ("tbb", "oneTBB, shipped in openvino/libs")
    #: Environment knobs measured here (benchmarks/environment.py, docs/measurements.md).
    environment_knobs: ClassVar[dict[str, tuple[KnobVerdict, str]]] = {
        f"allocator={a}": ("breaks", "OpenVINO 2026.4's CPU plugin aborts compiling any model "
                                     f"with lib{a} preloaded (glibc: munmap_chunk(): invalid "
                                     "pointer, double free or corruption; AMD EPYC family 25 "
                                     "model 17, 2026-12-05)") for a in ("tcmalloc", "jemalloc")}
    options = (
        EngineOption("streams", "OpenVINO inference streams compiled: each runs whole batches, "
                                "from the requests in flight [default: 1; with --hint, the hint's "
                                "choice]."),
        EngineOption("requests", "OpenVINO infer requests of the full batch kept in flight "
                                 "(asynchronous) over the streams [default: 1, one synchronous "
                                 "call at a time; with --hint or --streams, OpenVINO's optimal "
                                 "number for them]."),
        EngineOption("hint", "OpenVINO performance hint: it chooses the streams and threads per "
                             "stream (recorded) unless --streams is given [default: latency, 1 "
                             "stream].",
                     choices=("throughput", "latency")),
    )

    def versions(self) -> dict[str, str]:
        import openvino as ov

        out = {"openvino": ov.get_version()}
        try:
            out["nncf"] = version("nncf")
        except Exception:
            out["nncf"] = "not installed"
        return out

    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        s = cpu_support(precision, cpu)
        if precision == "bf16" and s.status != "native":
            # The CPU plugin does not emulate BF16: it quietly runs FP32 instead.
            return Support("unsupported", f"{s.reason}; OpenVINO would run FP32 instead")
        return s

    def prepare(self, spec: SessionSpec) -> Session:
        model, precision, threads = spec.model, spec.precision, spec.threads
        calibration, batch_size, options = spec.calibration, spec.batch, spec.options
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        streams, hint = options.get("streams"), options.get("hint")
        t0 = time.perf_counter()
        core = ov.Core()
        source = _quantize(model, calibration) if precision == "int8" else model.path
        t_quant = time.perf_counter() - t0
        config = {
            # FP32 must be asked for: on a BF16-capable CPU the plugin otherwise runs BF16.
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
            props.inference_num_threads: threads,
            hints.performance_mode: hints.PerformanceMode.THROUGHPUT
            if hint == "throughput" else hints.PerformanceMode.LATENCY,
            props.enable_profiling: spec.profiling,
        }
        if streams is not None or hint is None:
            config[props.num_streams] = streams or 1
        t_read = time.perf_counter()
        ov_model = core.read_model(str(source))
        t_read = time.perf_counter() - t_read
        ov_model.reshape({model.input_name: list(model.input_shape(batch_size))})
        compiled = core.compile_model(ov_model, "CPU", config)
        optimal = int(compiled.get_property(props.optimal_number_of_infer_requests))
        # Without --requests: one synchronous call (the reference), or, once the streams or the
        # hint are set, OpenVINO's own optimal number, as benchmark_app keeps in flight.
        requests = options.get("requests") or (optimal if streams or hint else 1)
        layers = _runtime_precisions(compiled)
        counts = by_precision(layers)
        n_streams = int(compiled.get_property(props.num_streams))
        execution = Execution(
            concurrency=_concurrency(n_streams, requests),
            executed_precision=dominant_precision(counts),
            layer_precisions=dict(layers),
            quantized_ops=counts.get("int8", 0) if precision == "int8" else None,
            details={
                "inference_precision_hint": str(compiled.get_property(hints.inference_precision)),
                "performance_hint": str(compiled.get_property(hints.performance_mode)),
                "num_streams": n_streams,
                "inference_num_threads": int(compiled.get_property(props.inference_num_threads)),
                "optimal_number_of_infer_requests": optimal,
                "requests_in_flight": requests,
                "api": "sync" if requests == 1 else "async",
                "enable_cpu_pinning": bool(compiled.get_property(hints.enable_cpu_pinning)),
                "enable_hyper_threading": bool(compiled.get_property(hints.enable_hyper_threading)),
                "scheduling_core_type": str(compiled.get_property(hints.scheduling_core_type)),
                "static_input_shape": list(model.input_shape(batch_size)),
                "int8_model": str(source) if precision == "int8" else None,
                "quantizer": "nncf.quantize (post-training, default preset"
                + (", transformer model type)" if model.transformer else ")")
                if precision == "int8" else None,
                "quantize_seconds": round(t_quant, 3) if precision == "int8" else None,
            },
            prepare_seconds=time.perf_counter() - t0, read_seconds=t_read,
        )
        return OpenVINOSession(compiled, model.output_name, execution, requests)

    def search_space(self, precision: Precision, threads: int) -> list[Variant]:
        """Streams (1, 2, 4, ... up to the threads) x requests in flight (one or two per
        stream) under the THROUGHPUT hint."""
        out = []
        for streams in (2 ** i for i in range(8)):
            if streams > threads:
                break
            out += [Variant((("streams", streams), ("requests", r)), f"s{streams}-r{r}",
                            _concurrency(streams, r)) for r in (streams, 2 * streams) if r > 1]
        return out

    def own_method(self, mode: str, precision: Precision, threads: int
                   ) -> tuple[dict[str, Any] | None, str]:
        if mode == "throughput":
            return {"hint": "throughput"}, (
                "OpenVINO's THROUGHPUT hint with its optimal number of requests in flight, as "
                "benchmark_app runs it")
        return None, ("OpenVINO's LATENCY hint is one stream on all threads and one synchronous "
                      "request, as benchmark_app -hint latency runs it")
