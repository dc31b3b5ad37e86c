"""ONNX Runtime CPU execution provider: FP32, and INT8 by static QDQ quantization (cached).

Its CPU provider has no BF16 convolution kernels (it rejects a BF16 Conv at load), so BF16 is
reported unsupported rather than measured as FP32 under a BF16 label."""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from visionbench.cache import cached
from visionbench.data.calibration import Calibration
from visionbench.engines.base import (
    SESSIONS,
    Engine,
    EngineOption,
    Execution,
    KnobVerdict,
    OpProfile,
    Precision,
    Session,
    SessionSpec,
    Support,
    Variant,
    concurrently,
    cpu_support,
    op_times,
    session_variants,
)
from visionbench.fsutil import cache_dir
from visionbench.models.flops import op_flops
from visionbench.models.spec import ModelSpec
from visionbench.sysinfo import CpuFeatures, cpu_features

#: Operators that compute in integer arithmetic once ORT has fused the QDQ pattern.
QUANTIZED_OPS = {
    "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearMul", "QLinearConcat",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearLeakyRelu", "QLinearSigmoid",
}
#: Operators that convert (precision, layout) rather than compute.
CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "ReorderInput", "ReorderOutput", "Cast",
               "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
QUANT_SETTINGS = "QDQ, per-channel, int8 symmetric weights, uint8 activations, MinMax calibration"


def _quantize(model: ModelSpec, calibration: Calibration, reduce_range: bool) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = cache_dir() / "int8" / (
        f"onnxruntime-{model.sha256[:16]}-{calibration.key}-ort{ort.__version__}"
        f"{'-7bit' if reduce_range else ''}.onnx"
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {model.input_name: x}

    def build(path: Path) -> None:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(model.path), str(pre))
            out = Path(tmp) / "q.onnx"
            quantize_static(
                str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                reduce_range=reduce_range,
                # A transformer's attention products (MatMul of two activations) stay in float,
                # as ONNX Runtime advises for transformers; only products with weights quantize.
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                               "MatMulConstBOnly": model.transformer},
            )
            os.replace(out, path)

    return cached(path, "ONNX Runtime INT8 model (static QDQ)", build)


def _costs(args: dict[str, Any]) -> tuple[float | None, float | None]:
    """A node's FLOPs from the shapes its trace event gives, and the bytes ONNX Runtime counts
    for it (activations, parameters and outputs)."""
    shapes = [next(iter(d.values()), []) for d in args.get("input_type_shape", [])]
    outputs = [next(iter(d.values()), []) for d in args.get("output_type_shape", [])]
    flops = op_flops(args.get("op_name", ""), shapes, outputs[0]) if outputs else None
    sizes = [args.get(k) for k in ("activation_size", "parameter_size", "output_size")]
    return flops, float(sum(int(v) for v in sizes)) if all(sizes) else None


class OnnxRuntimeSession(Session):
    def __init__(self, session: object, input_name: str, output_name: str, execution: Execution,
                 profiling: bool = False) -> None:
        self._session = session
        #: Whether ORT still writes a trace (prepared with profiling, not yet profiled).
        self._tracing = profiling
        self._input = input_name
        names = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
        self._primary = names.index(output_name) if output_name in names else 0
        self.execution = execution

    def run_outputs(self, batch: Any) -> list[np.ndarray]:
        # Every output, always: asking ONNX Runtime for one would skip the graph's other branches.
        return self._session.run(None, {self._input: batch})  # type: ignore[attr-defined]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_outputs(batch)[self._primary]

    def profile(self, batch: Any, calls: int, warmup: int) -> OpProfile:
        """ONNX Runtime's session profiling (on since the session was made): its trace of the
        last ``calls`` runs, each node's median kernel time; the trace saved as it wrote it."""
        if not self._tracing:
            raise NotImplementedError("this ONNX Runtime session was not prepared for profiling")
        for _ in range(warmup):
            self.run_outputs(batch)
        call_ms = []
        for _ in range(calls):
            t = time.perf_counter()
            self.run_outputs(batch)
            call_ms.append((time.perf_counter() - t) * 1e3)
        self._tracing = False
        path = Path(self._session.end_profiling())  # type: ignore[attr-defined]
        try:
            raw = path.read_bytes()
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        events = json.loads(raw)
        # The timed calls' runs, the warm-up's left out; each node event placed in its run.
        runs = sorted((e for e in events if e.get("name") == "model_run"),
                      key=lambda e: e["ts"])[-calls:]
        starts = [r["ts"] for r in runs]
        times: dict[str, list[float]] = {}
        kinds: dict[str, tuple[str, str]] = {}
        per_call = [0.0] * len(runs)
        costs: dict[str, tuple[float | None, float | None]] = {}
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                continue
            run = bisect.bisect_right(starts, e["ts"]) - 1
            if run < 0:
                continue
            name, args = e["name"].removesuffix("_kernel_time"), e.get("args", {})
            if name not in kinds:
                kinds[name] = (args.get("op_name", "?"), args.get("provider", ""))
                costs[name] = _costs(args)
            times.setdefault(name, []).append(e["dur"] / 1e3)
            per_call[run] += e["dur"] / 1e3
        ops = op_times(kinds, times, calls, lambda _, kind: _precision(kind), costs)
        return OpProfile(ops, call_ms, per_call,
                         "ONNX Runtime session profiling (kernel time per node)",
                         {"onnxruntime-trace.json": raw}, resolution_ms=0.001,
                         flops_from="the shapes in ONNX Runtime's trace")  # whole µs

    def close(self) -> None:
        if self._tracing:  # prepared for profiling, never profiled: its trace folder removed
            self._tracing = False
            path = Path(self._session.end_profiling())  # type: ignore[attr-defined]
            shutil.rmtree(path.parent, ignore_errors=True)


def _precision(op_type: str) -> str:
    """What an executed operator computes in: integer arithmetic for the quantized ones; the
    conversions and layout changes in between compute nothing."""
    if op_type in QUANTIZED_OPS:
        return "int8"
    return "" if op_type in CONVERSIONS else "fp32"


def _executed_ops(options: object, source: Path, providers: list[str]) -> Counter[str]:
    """Operator counts of the graph ORT really executes, after its optimizations and fusions."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(opt)  # type: ignore[attr-defined]
        options.log_severity_level = 3  # type: ignore[attr-defined]  # its note on saving NCHWc
        ort.InferenceSession(str(source), options, providers=providers)
        graph = onnx.load(str(opt), load_external_data=False).graph
        return Counter(n.op_type for n in graph.node)


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    module = "onnxruntime"
    extra = "onnxruntime"
    #: Read after a run: no OpenMP or TBB library mapped (PyPI's build has its own pool).
    threading = ("own", "its own thread pool; the PyPI build links no OpenMP")
    #: Environment knobs measured here (benchmarks/environment.py): none yet, all searched.
    environment_knobs: ClassVar[dict[str, tuple[KnobVerdict, str]]] = {}
    options = (
        EngineOption("inter_op_threads", "ONNX Runtime inter-op threads (parallel execution mode "
                                         "when above 1) [default: 1, sequential]."),
        SESSIONS,
    )
    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        if precision == "bf16":
            return Support(
                "unsupported", "ONNX Runtime's CPU execution provider has no BF16 kernels"
            )
        return cpu_support(precision, cpu)

    def prepare(self, spec: SessionSpec) -> Session:
        model, precision, calibration = spec.model, spec.precision, spec.calibration
        import onnxruntime as ort

        t0 = time.perf_counter()
        # Without VNNI, U8S8 kernels add pairs of products in 16 bits (vpmaddubsw) and saturate;
        # ORT's advice is 7-bit weights there (reduce_range). On EfficientNet-Lite0 here it cut
        # the INT8 logit error from 30% to 9% and kept FP32's top-1 on every test photo.
        reduce_range = not cpu_features().vnni
        source = _quantize(model, calibration, reduce_range) if precision == "int8" else model.path
        t_quant = time.perf_counter() - t0

        inter_op = spec.option("inter_op_threads") or 1

        def make(threads: int) -> Session:
            def session_options(profiling: bool = False) -> ort.SessionOptions:
                o = ort.SessionOptions()
                o.intra_op_num_threads = threads
                o.inter_op_num_threads = inter_op
                # Inter-op threads only run anything in parallel execution mode.
                o.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if inter_op > 1
                                    else ort.ExecutionMode.ORT_SEQUENTIAL)
                o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                if profiling:  # its trace written in a folder of its own, read at the end
                    o.enable_profiling = True
                    o.profile_file_prefix = str(
                        Path(tempfile.mkdtemp(prefix="visionbench-ort-profile-")) / "trace")
                return o

            ops: Counter[str] = Counter()
            if precision == "int8":
                ops = _executed_ops(session_options(), source, self.providers)
            session = ort.InferenceSession(str(source), session_options(spec.profiling),
                                           providers=self.providers)
            quantized = sum(n for op, n in ops.items() if op in QUANTIZED_OPS)
            executed = "fp32" if precision == "fp32" or quantized == 0 else "int8"
            execution = Execution(
                executed_precision=executed,
                layer_precisions={op: n for op, n in ops.items() if op in QUANTIZED_OPS},
                quantized_ops=quantized if precision == "int8" else None,
                details={
                    "providers": session.get_providers(),
                    "intra_op_num_threads": threads,
                    "inter_op_num_threads": inter_op,
                    "execution_mode": "parallel" if inter_op > 1 else "sequential",
                    "graph_optimization_level": "ORT_ENABLE_ALL",
                    "int8_model": str(source) if precision == "int8" else None,
                    "quantizer": f"onnxruntime.quantization.quantize_static ({QUANT_SETTINGS}"
                    + (", 7-bit weights (reduce_range: no VNNI)" if reduce_range else "")
                    + ("; transformer: attention products in float)" if model.transformer else ")")
                    if precision == "int8" else None,
                    "quantize_seconds": round(t_quant, 3) if precision == "int8" else None,
                    "unfused_qdq_ops": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0)
                    if precision == "int8" else None,
                },
                prepare_seconds=time.perf_counter() - t0,
            )
            return OnnxRuntimeSession(session, model.input_name, model.output_name, execution,
                                      spec.profiling)

        session = concurrently(spec, make)
        session.execution.prepare_seconds = time.perf_counter() - t0
        return session

    def search_space(self, precision: Precision, threads: int) -> list[Variant]:
        return session_variants(threads)

    def own_method(self, mode: str, precision: Precision, threads: int
                   ) -> tuple[dict[str, Any] | None, str]:
        if mode == "throughput" and precision == "int8" and threads > 1:
            return {"sessions": threads}, (
                "one session per core, run at once: faster than one session on all cores at INT8 "
                "here (benchmarks/concurrent_sessions.py, docs/measurements.md)")
        if mode == "latency":
            return None, "ONNX Runtime's batch-1 latency is one session's call on all threads"
        return None, ("one session per core, run at once, measured slower than one session on all "
                      f"cores at {precision.upper()} here (benchmarks/concurrent_sessions.py, "
                      "docs/measurements.md)" if threads > 1 else "one thread: one session")

