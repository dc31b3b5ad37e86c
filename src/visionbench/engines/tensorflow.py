"""TensorFlow on the CPU, the framework of the reference study, run as its scripts run it: a frozen
graph (variables folded into constants) called as a compiled function, oneDNN on, intra-op threads
= the cores given, inter-op threads = 1.

- FP32: the frozen graph.
- BF16: oneDNN auto mixed precision (the grappler pass the Intel reference scripts turn on),
  verified by counting the compute ops the optimized graph runs in bfloat16.
- INT8: Intel Neural Compressor's post-training static quantization of the frozen graph, as the
  Intel reference models made their INT8 graphs. TensorFlow runs those quantized ops only where
  its oneDNN build allows INT8 (AVX-512 or AVX-VNNI-INT8); elsewhere the same frozen graph is
  quantized to a full-integer TFLite model and run on LiteRT's XNNPACK int8 kernels. Which path
  ran is recorded with every measurement.

Runs TensorFlow's own files (Keras, SavedModel, frozen graph) and ResNet-50 v1.5 ONNX files (built
in, ``--weights``, ``export``), rebuilt in Keras from the very weights the other engines run.
"""

from __future__ import annotations

import bisect
import json
import os
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from visionbench.cache import cached
from visionbench.capture import capture_fd
from visionbench.data.calibration import Calibration
from visionbench.engines.base import (
    ENVIRONMENT_MEASURED,
    Engine,
    Execution,
    KnobVerdict,
    OpProfile,
    Precision,
    Session,
    SessionSpec,
    Support,
    cpu_support,
    dominant_precision,
    op_times,
)
from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import atomic_write_bytes, cache_dir
from visionbench.models import keras_model as definition
from visionbench.models.spec import ModelSpec
from visionbench.sysinfo import CpuFeatures

#: Ops that carry a network's arithmetic, in TensorFlow graphs and in TFLite models.
COMPUTE_OPS = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "_FusedDepthwiseConv2dNative",
               "MatMul", "_FusedMatMul", "BatchMatMulV2", "Conv3D"}
LITE_COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"}
TF_DTYPE_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
LITE_DTYPE_PRECISION = {"float32": "fp32", "int8": "int8", "uint8": "int8", "int16": "int16"}
INC_SETTINGS = "neural_compressor.tensorflow.quantize_model (StaticQuantConfig, default: per-channel " \
               "int8 weights, uint8/int8 activations, MinMax calibration)"
LITE_SETTINGS = "tf.lite.TFLiteConverter full-integer (TFLITE_BUILTINS_INT8, float input/output), " \
                "representative dataset = the calibration samples"


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def onednn_int8(cpu: CpuFeatures) -> bool:
    """TensorFlow's oneDNN runs quantized ops only with AVX-512 or AVX-VNNI-INT8 (its
    IsDataTypeSupportedByOneDNNOnThisCPU); elsewhere Neural Compressor's graph cannot execute."""
    return cpu.avx512 or "avx_vnni_int8" in cpu.flags


def onednn_bf16(cpu: CpuFeatures) -> bool:
    """TensorFlow's oneDNN runs bfloat16 only with AVX-512 (emulated) or native BF16 instructions."""
    return cpu.avx512 or cpu.bf16 or "avx_ne_convert" in cpu.flags


def _dtype_name(tf: Any, node: Any) -> str | None:
    for attr in ("T", "dtype"):
        if attr in node.attr and node.attr[attr].type:
            return tf.dtypes.as_dtype(node.attr[attr].type).name
    return None


def _ran_graph(tf: Any, fn: Any, x: Any) -> list[Any]:
    """The nodes of the graph TensorFlow really ran for one call (after grappler: folding,
    fusion, auto mixed precision)."""
    from tensorflow.python.eager import context

    context.enable_run_metadata()
    try:
        fn(x)
        meta = context.export_run_metadata()
    finally:
        context.disable_run_metadata()
    graphs = [g.post_optimization_graph for g in meta.function_graphs] or list(meta.partition_graphs)
    # A nested function may be inlined or not: take the fullest graph.
    return max((list(g.node) for g in graphs), key=lambda nodes: sum(
        1 for n in nodes if n.op in COMPUTE_OPS or "Quantized" in n.op), default=[])


def executed_ops(tf: Any, nodes: list[Any]) -> Counter[str]:
    """``op:dtype`` counts of the compute ops among the nodes of the graph that ran."""
    return Counter(f"{node.op}:{_dtype_name(tf, node) or '?'}" for node in nodes
                   if node.op in COMPUTE_OPS or "Quantized" in node.op)


def _op_precision(tf: Any, node: Any) -> str:
    """What one node of the ran graph computed in: its quantized kernels int8, quantize and
    dequantize none, else its data type."""
    if "Quantized" in node.op:
        return "int8"
    if "Quantize" in node.op:
        return ""
    return TF_DTYPE_PRECISION.get(_dtype_name(tf, node) or "", "")


def _precision_counts(ops: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, n in ops.items():
        op, dtype = key.split(":")
        out["int8" if "Quantized" in op else TF_DTYPE_PRECISION.get(dtype, dtype)] += n
    return out


def graph_input(tf: Any, batch: np.ndarray, nchw: bool) -> Any:
    """A numpy batch as the NHWC tensor a graph takes (transposed from NCHW where needed)."""
    if nchw:
        batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    return tf.constant(batch)


#: Grappler's BF16 auto mixed precision, as ``set_amp`` last set it (None: not yet).
_amp: list[bool | None] = [None]
AMP_OPTION = "auto_mixed_precision_onednn_bfloat16"


def set_amp(tf: Any, on: bool) -> None:
    """Turn grappler's BF16 auto mixed precision on or off for the calls that follow. TensorFlow
    optimizes a function's graph for the options in force at each call (one graph per setting,
    kept): a BF16 function called with the option off runs its FP32 graph."""
    if _amp[0] is not on:
        tf.config.optimizer.set_experimental_options({AMP_OPTION: on})
        _amp[0] = on


#: The profiler's mark around each profiled call.
_CALL = "visionbench_call"


def _xspace(raw: bytes) -> Any:
    """The profiler's XSpace protobuf (where TensorFlow's build keeps its module)."""
    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    space.ParseFromString(raw)
    return space


def _events(plane: Any) -> list[tuple[str, int, int, int]]:
    """Every event of a plane: (name, line index, start ns, end ns)."""
    out = []
    for tid, line in enumerate(plane.lines):
        base = line.timestamp_ns * 1000
        for e in line.events:
            start = base + e.offset_ps
            out.append((plane.event_metadata[e.metadata_id].name, tid, start // 1000,
                        (start + e.duration_ps) // 1000))
    return out


class GraphSession(Session):
    """A frozen graph as a compiled function, every call under its own precision's grappler
    options; NCHW inputs are transposed when fed."""

    def __init__(self, tf: Any, fn: Any, nchw_input: bool, bf16: bool,
                 precisions: dict[str, str]) -> None:
        self._tf = tf
        self._fn = fn
        self._nchw = nchw_input
        self._bf16 = bf16
        #: Each node of the graph that ran -> what it computed in (TensorFlow gives the graph
        #: that ran at the function's first call only).
        self._precisions = precisions

    def feed(self, batch: np.ndarray) -> Any:
        return graph_input(self._tf, batch, self._nchw)

    def run(self, batch: Any) -> np.ndarray:
        set_amp(self._tf, self._bf16)
        return self._fn(batch).numpy()

    def profile(self, batch: Any, calls: int, warmup: int) -> OpProfile:
        """TensorFlow's profiler (host tracer): each executed node's time from the executor's
        events, grouped into the calls by a mark around each; the node's precision from the graph
        that ran (after grappler's rewrites); the events as a Chrome/Perfetto trace."""
        tf = self._tf
        for _ in range(warmup):
            self.run(batch)
        nodes = self._precisions
        call_ms = []
        with tempfile.TemporaryDirectory(prefix="visionbench-tf-profile-") as logdir:
            with capture_fd(2):
                tf.profiler.experimental.start(logdir, options=tf.profiler.experimental
                                               .ProfilerOptions(host_tracer_level=2))
            try:
                for i in range(calls):
                    t = time.perf_counter()
                    with tf.profiler.experimental.Trace(_CALL, step_num=i, _r=1):
                        self.run(batch)
                    call_ms.append((time.perf_counter() - t) * 1e3)
            finally:
                with capture_fd(2):
                    tf.profiler.experimental.stop()
            space = _xspace(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
        plane = next(p for p in space.planes if p.name == "/host:CPU")
        events = _events(plane)
        marks = sorted((start, end) for name, _, start, end in events if name == _CALL)
        times: dict[str, list[float]] = {}
        kinds: dict[str, tuple[str, str]] = {}
        per_call = [0.0] * len(marks)
        for name, _, start, end in events:
            node, sep, op = name.rpartition(":")
            if not sep or not node or "::" in name or " " in name:  # the runtime's own events
                continue
            call = bisect.bisect_right(marks, (start, float("inf"))) - 1
            if call < 0 or start > marks[call][1]:
                continue
            kinds.setdefault(node, (op.removeprefix("_MklNative").removeprefix("_Mkl"), op))
            times.setdefault(node, []).append((end - start) / 1e6)
            per_call[call] += (end - start) / 1e6

        def precision(node: str, _: str) -> str:
            # The executor names a node of a called function with its caller's prefix.
            while node not in nodes and "/" in node:
                node = node.split("/", 1)[1]
            return nodes.get(node, "")

        ops = op_times(kinds, times, calls, precision)
        trace = {"traceEvents": [
            {"name": name, "ph": "X", "pid": 0, "tid": tid, "ts": start / 1e3,
             "dur": (end - start) / 1e3} for name, tid, start, end in events],
            "displayTimeUnit": "ms"}
        return OpProfile(ops, call_ms, per_call, "TensorFlow profiler (host tracer: executor "
                         "time per node)", {"tensorflow-trace.json": json.dumps(trace).encode()},
                         resolution_ms=0.0)


class LiteSession(Session):
    """A TFLite model on LiteRT's interpreter (XNNPACK delegate), resized to the batch."""

    def __init__(self, interpreter: Any, nchw_input: bool) -> None:
        self._it = interpreter
        self._in = interpreter.get_input_details()[0]["index"]
        self._out = interpreter.get_output_details()[0]["index"]
        self._nchw = nchw_input

    def feed(self, batch: np.ndarray) -> Any:
        if self._nchw:
            batch = batch.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def run(self, batch: Any) -> np.ndarray:
        self._it.set_tensor(self._in, batch)
        self._it.invoke()
        return self._it.get_tensor(self._out)


class TensorFlowEngine(Engine):
    name = "tensorflow"
    module = "tensorflow"
    extra = "tensorflow"
    formats = ("onnx", "tensorflow")
    definition = "keras"
    #: oneDNN reports "runtime:threadpool" (Eigen's pool, ONEDNN_VERBOSE=1); the libgomp a
    #: process maps is scikit-learn's, loaded by an import, and serves none of TF's ops.
    threading = ("own", "Eigen's thread pool; oneDNN runs on it, not on OpenMP")
    #: Environment knobs measured here (benchmarks/environment.py, docs/measurements.md).
    environment_knobs: ClassVar[dict[str, tuple[KnobVerdict, str]]] = {
        "allocator=tcmalloc": ("acts", "batch-1 p50 1.06x [1.04-1.27] faster, throughput 1.01x "
                                       "[0.98-1.11]; " + ENVIRONMENT_MEASURED),
        "allocator=jemalloc": ("nothing", "throughput 0.98x [0.83-1.01], batch-1 p50 1.05x "
                                          "[0.89-1.09]; " + ENVIRONMENT_MEASURED),
    }
    _frozen_cache: ClassVar[dict[str, Any]] = {}

    def versions(self) -> dict[str, str]:
        out = {}
        for dist, label in (("tensorflow", "tensorflow"), ("keras", "keras"),
                            ("neural-compressor-tf", "neural-compressor"),
                            ("ai-edge-litert", "ai-edge-litert")):
            v = _version(dist) or (_version("tensorflow-cpu") if dist == "tensorflow" else None)
            if v:
                out[label] = v
        return out

    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        if precision == "bf16":
            if not onednn_bf16(cpu):
                return Support(
                    "unsupported",
                    "TensorFlow's oneDNN runs BF16 only on CPUs with AVX-512 or AVX-NE-CONVERT; on "
                    "this CPU auto mixed precision leaves every op in FP32",
                )
            return cpu_support(precision, cpu)
        if precision == "int8":
            if onednn_int8(cpu):
                if _version("neural-compressor-tf") is None:
                    return Support("unsupported", "INT8 needs Intel Neural Compressor: "
                                                  "pip install 'visionbench[tensorflow]'")
                return cpu_support(precision, cpu)
            if _version("ai-edge-litert") is None:
                return Support("unsupported", "TensorFlow's oneDNN runs INT8 only with AVX-512 or "
                                              "AVX-VNNI-INT8, and LiteRT is not installed")
            return Support(
                "native",
                "TensorFlow's oneDNN runs INT8 only with AVX-512 or AVX-VNNI-INT8, which this CPU "
                "lacks: INT8 runs as a full-integer TFLite model on LiteRT's XNNPACK kernels, not as "
                "Neural Compressor's graph",
            )
        return Support("native")

    # -- model --------------------------------------------------------------------------------

    def _frozen(self, model: ModelSpec) -> Any:
        """The model as a FrozenModel (cached per file)."""
        from visionbench.models.tensorflow_files import freeze, import_tensorflow, load_frozen

        if model.format == "tensorflow":
            return load_frozen(model.path, model.input_name, model.output_name)
        if model.sha256 in self._frozen_cache:
            return self._frozen_cache[model.sha256]
        tf = import_tensorflow()
        keras_model = definition(model)
        frozen = freeze(tf, lambda x: keras_model(x, training=False),
                        (None, model.height, model.width, 3), "input", "logits")
        self._frozen_cache[model.sha256] = frozen
        return frozen

    # -- precisions -----------------------------------------------------------------------------

    def _graph(self, tf: Any, frozen: Any, bf16: bool, example: Any) -> tuple[Any, list[Any]]:
        """A compiled function over the frozen graph, optimized (with BF16 auto mixed precision
        when asked: ``set_amp``) at its first call, on the fed ``example``; the compute ops it
        really ran: the nodes of the graph that ran. The session calls it under the same options
        (``GraphSession``)."""
        spec = tf.TensorSpec(frozen.input_shape, tf.float32)
        set_amp(tf, bf16)
        fn = tf.function(lambda x: frozen.fn(x)[0]).get_concrete_function(spec)
        return fn, _ran_graph(tf, fn, example)

    def _nhwc_samples(self, model: ModelSpec, calibration: Calibration) -> list[np.ndarray]:
        nchw = model.format == "onnx" and model.layout == "NCHW"
        return [np.ascontiguousarray(s.transpose(0, 2, 3, 1) if nchw else s, dtype=np.float32)
                for s in calibration]

    def _int8_path(self, model: ModelSpec, calibration: Calibration, suffix: str, tool: str) -> Path:
        return cache_dir() / "int8" / f"tensorflow-{model.sha256[:16]}-{calibration.key}-{tool}{suffix}"

    def _inc(self, tf: Any, model: ModelSpec, frozen: Any, calibration: Calibration) -> tuple[Path, float]:
        """Neural Compressor's static INT8 frozen graph (cached): its path and the seconds it took."""
        took = [0.0]

        def build(path: Path) -> None:
            # Neural Compressor calibrates by capturing what the graph prints on the stream that
            # was sys.stderr when it was imported: make that the process's real stderr (not a test
            # runner's or a notebook's replacement), or calibration silently collects nothing.
            saved, sys.stderr = sys.stderr, sys.__stderr__
            try:
                from neural_compressor.tensorflow import StaticQuantConfig, quantize_model
                from neural_compressor.tensorflow.utils import BaseDataLoader
            finally:
                sys.stderr = saved

            samples = self._nhwc_samples(model, calibration)

            class Dataset:
                def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
                    return samples[i][0], 0

                def __len__(self) -> int:
                    return len(samples)

            t0 = time.perf_counter()
            source = path.with_name(f".{path.stem}.{os.getpid()}.fp32.pb")
            atomic_write_bytes(source, frozen.graph_def.SerializeToString())
            try:
                with capture_fd(1), capture_fd(2):  # Neural Compressor logs every pass it runs
                    q = quantize_model(str(source), StaticQuantConfig(),
                                       BaseDataLoader(dataset=Dataset(), batch_size=1),
                                       calib_iteration=len(samples))
            except Exception as e:
                raise VisionbenchError(
                    f"Neural Compressor could not quantize the model: {describe(e)}") from e
            finally:
                source.unlink(missing_ok=True)
            atomic_write_bytes(path, q.graph_def.SerializeToString())
            took[0] = time.perf_counter() - t0

        path = self._int8_path(model, calibration, ".pb", f"inc{_version('neural-compressor-tf')}")
        return cached(path, "TensorFlow INT8 graph (Neural Compressor)", build), took[0]

    def _lite(self, tf: Any, model: ModelSpec, frozen: Any, calibration: Calibration) -> tuple[Path, float]:
        """The full-integer TFLite model (cached): its path and the seconds converting took."""
        took = [0.0]

        def build(path: Path) -> None:
            samples = self._nhwc_samples(model, calibration)
            t0 = time.perf_counter()
            # The graph is frozen: it holds no variables, so an empty module is its whole state.
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen.fn], tf.Module())
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([s] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
            try:
                with capture_fd(2):  # the converter logs its MLIR passes on stderr
                    data = converter.convert()
            except Exception as e:
                raise VisionbenchError(
                    f"TFLite could not quantize the model to INT8: {describe(e)}") from e
            atomic_write_bytes(path, data)
            took[0] = time.perf_counter() - t0

        path = self._int8_path(model, calibration, ".tflite", f"tflite{tf.__version__}")
        return cached(path, "TFLite full-integer INT8 model", build), took[0]

    @staticmethod
    def _interpreter(path: Path, threads: int, shape: tuple[int, ...]) -> tuple[Any, Counter[str], bool]:
        """LiteRT's interpreter for ``path`` at ``shape``; ``op:input-dtype`` counts of its compute
        ops; whether XNNPACK took them."""
        from ai_edge_litert.interpreter import Interpreter

        with capture_fd(2):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.resize_tensor_input(it.get_input_details()[0]["index"], list(shape))
            it.allocate_tensors()
        tensors = {t["index"]: t for t in it.get_tensor_details()}
        ops: Counter[str] = Counter()
        delegated = False
        for op in it._get_ops_details():  # the one listing of a model's ops LiteRT offers
            delegated |= op["op_name"] == "DELEGATE"
            if op["op_name"] in LITE_COMPUTE_OPS and len(op["inputs"]) and op["inputs"][0] >= 0:
                dtype = np.dtype(tensors[op["inputs"][0]]["dtype"]).name
                ops[f"{op['op_name']}:{dtype}"] += 1
        return it, ops, delegated

    def prepare(self, spec: SessionSpec) -> Session:
        model, precision, threads = spec.model, spec.precision, spec.threads
        calibration, batch_size = spec.calibration, spec.batch
        from visionbench.models.tensorflow_files import import_tensorflow, set_threads
        from visionbench.sysinfo import cpu_features

        t0 = time.perf_counter()
        if model.format not in self.formats:
            raise VisionbenchError(f"the tensorflow engine cannot run {model.format} models")
        tf = import_tensorflow()  # first: it sets oneDNN on and silences start-up chatter
        from tensorflow.python.util import _pywrap_util_port
        intra, inter = set_threads(tf, threads)
        frozen = self._frozen(model)
        nchw = model.format == "onnx" and model.layout == "NCHW"
        nhwc_shape = (batch_size, model.height, model.width, model.channels)
        details: dict[str, Any] = {
            "intra_op_threads": intra, "inter_op_threads": inter,
            "onednn": bool(_pywrap_util_port.IsMklEnabled()),
            "graph": "frozen (variables folded into constants)",
            "input": f"{frozen.input_name} NHWC" + (" (fed transposed from NCHW)" if nchw else ""),
        }
        example = np.random.default_rng(0).standard_normal(model.input_shape(batch_size), dtype=np.float32)
        quantized = None
        cpu = cpu_features()
        session: Session
        if precision == "int8" and not onednn_int8(cpu):
            path, secs = self._lite(tf, model, frozen, calibration)
            it, ops, delegated = self._interpreter(path, threads, nhwc_shape)
            session = LiteSession(it, nchw)
            details.update(path="LiteRT full-integer TFLite model", quantizer=LITE_SETTINGS,
                           int8_model=str(path), quantize_seconds=round(secs, 3),
                           delegate="XNNPACK" if delegated else "none (LiteRT reference kernels)",
                           interpreter_threads=threads)
            counts: Counter[str] = Counter()
            for key, n in ops.items():
                dtype = key.split(":")[1]
                counts[LITE_DTYPE_PRECISION.get(dtype, dtype)] += n
            quantized = counts["int8"]
            session.run(session.feed(example))
        else:
            if precision == "int8":
                path, secs = self._inc(tf, model, frozen, calibration)
                from visionbench.models.tensorflow_files import load_frozen

                frozen = load_frozen(path)
                details.update(path="Neural Compressor INT8 frozen graph", quantizer=INC_SETTINGS,
                               int8_model=str(path), quantize_seconds=round(secs, 3))
            elif precision == "bf16":
                details["bf16"] = "grappler auto_mixed_precision_onednn_bfloat16"
            fn, nodes = self._graph(tf, frozen, precision == "bf16", graph_input(tf, example, nchw))
            ops = executed_ops(tf, nodes)
            session = GraphSession(tf, fn, nchw, precision == "bf16",
                                   {n.name: _op_precision(tf, n) for n in nodes})
            counts = _precision_counts(ops)
            quantized = counts["int8"] if precision == "int8" else None
        details["compute_ops"] = dict(ops)
        executed = dominant_precision(counts)
        if precision == "bf16" and counts["bf16"] == 0:
            raise VisionbenchError(
                "asked for bf16, but TensorFlow's auto mixed precision left every compute op in "
                f"FP32 ({dict(ops)}): refusing to report FP32 as BF16"
            )
        session.execution = Execution(
            executed_precision=executed, layer_precisions=dict(counts), quantized_ops=quantized,
            details=details, prepare_seconds=time.perf_counter() - t0,
        )
        return session
