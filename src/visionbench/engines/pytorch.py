"""PyTorch on the CPU, in two configurations of one engine:

- ``torch``: compiled with Inductor (``torch.compile``, weights frozen). FP32; BF16 by autocast;
  INT8 by PT2E post-training quantization (X86InductorQuantizer) lowered through Inductor, with
  FX graph mode ('x86' backend) only if PT2E fails, recording which ran.
- ``torch-eager``: eager mode, channels_last, ``inference_mode``. FP32 and BF16 (autocast); INT8
  is left to the compiled configuration, which is how PT2E runs integer kernels.

What really ran is read from oneDNN's own verbose log of one inference: the data type and the
kernel of every convolution and matrix multiply it executed.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from visionbench.capture import capture_fd
from visionbench.data.calibration import Calibration
from visionbench.engines.base import (
    ENVIRONMENT_MEASURED,
    SESSIONS,
    Engine,
    Execution,
    KnobVerdict,
    OpProfile,
    Precision,
    Session,
    SessionSpec,
    Support,
    Variant,
    by_precision,
    concurrently,
    cpu_support,
    dominant_precision,
    op_times,
    session_variants,
)
from visionbench.errors import describe
from visionbench.models import torch_module
from visionbench.models.spec import ModelSpec
from visionbench.sysinfo import CpuFeatures, cpu_features

_ONEDNN_COMPUTE = ("convolution", "inner_product", "matmul")


def onednn_kernels(call: Callable[[], Any]) -> Counter[str]:
    """``primitive:src-dtype:implementation`` counts of the oneDNN compute kernels one call ran."""
    import torch

    with capture_fd(1) as lines, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        call()
    kernels: Counter[str] = Counter()
    for line in lines:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        prim = next((f for f in fields if f in _ONEDNN_COMPUTE), None)
        if prim is None:
            continue
        i = fields.index(prim)
        impl = fields[i + 1] if i + 1 < len(fields) else "?"
        m = re.search(r"src(?:_|:)(\w+?)(?::|$)", ",".join(fields[i + 2:]))
        kernels[f"{prim}:{m.group(1) if m else '?'}:{impl}"] += 1
    return kernels


#: The profiler's mark around each profiled call: the operations are what it holds.
_CALL = "visionbench::call"
#: Of the profiled calls, the last this many are kept in the trace (an eager ResNet-50 call is
#: about 1,500 events: a hundred of them would make a trace too large to open).
TRACED_CALLS = 10
#: The profiler's input dtypes, as the precision an operation computed in.
_DTYPES = {"float": "fp32", "c10::BFloat16": "bf16", "unsigned char": "int8",
           "signed char": "int8"}


def _operations(root: Any) -> list[Any]:
    """The operations under one call's mark, in order: each dispatcher operator (a name with a
    namespace, ``aten::conv2d``, ``onednn::qconv_pointwise``) or event without children (an
    Inductor kernel, ``graph_0_cpp_fused_add_relu_3``), looking inside the wrappers that hold
    them (``Torch-Compiled Region``, ``## Call CompiledFxGraph ##``), never inside an operator."""
    out, stack = [], list(reversed(root.cpu_children))
    while stack:
        event = stack.pop()
        if "::" in event.name or not event.cpu_children:
            out.append(event)
        else:
            stack.extend(reversed(event.cpu_children))
    return out


def _flops(event: Any) -> float | None:
    """PyTorch's own FLOP count of an operator: its own, else its children's (``aten::linear``
    counts none, the ``aten::addmm`` under it does)."""
    if event.flops:
        return float(event.flops)
    return float(sum(_flops(c) or 0.0 for c in event.cpu_children)) or None


def _kernel(event: Any) -> Any:
    """The innermost event that holds most of an operation's time: the kernel that ran
    (``aten::conv2d`` -> ``aten::mkldnn_convolution``), never an allocation or a scalar read
    beside it (a first call's ``aten::item`` under ``onednn::qconv_pointwise`` once took most of
    its time): only operators taking a tensor of a precision are looked into."""
    while inner_ops := [c for c in event.cpu_children if c.input_dtypes[:1]
                        and c.input_dtypes[0] in _DTYPES]:
        inner = max(inner_ops, key=lambda c: c.cpu_time_total)
        if inner.cpu_time_total < 0.5 * event.cpu_time_total:
            break
        event = inner
    return event


class TorchSession(Session):
    def __init__(self, fn: Callable[[Any], Any], autocast: bool, execution: Execution,
                 profiling: bool = False) -> None:
        import torch

        self._torch = torch
        self._fn = fn
        self._autocast = autocast
        self._profiling = profiling
        self.execution = execution

    def forward(self, batch: np.ndarray) -> Any:
        """The model's output tensor, in the dtype the model computed it."""
        torch = self._torch
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self._autocast):
            return self._fn(x)

    def run_outputs(self, batch: Any) -> list[np.ndarray]:
        out = self.forward(batch)
        return [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.forward(batch)
        return (out[0] if isinstance(out, (tuple, list)) else out).float().numpy()

    def profile(self, batch: Any, calls: int, warmup: int) -> OpProfile:
        """torch.profiler (CPU activities, input dtypes recorded) around each call: each
        operation's median over ``calls``; Inductor's own generated kernels included (compiled
        with ``cpp.enable_kernel_profile``); the trace of the last ``TRACED_CALLS`` calls."""
        if not self._profiling:
            raise NotImplementedError("this PyTorch session was not prepared for profiling")
        from torch.profiler import ProfilerActivity, profile, record_function

        for _ in range(warmup):
            self.run(batch)
        call_ms: list[float] = []
        per_call: list[float] = []
        times: dict[str, list[float]] = {}
        kinds: dict[str, tuple[str, str]] = {}
        precisions: dict[str, str] = {}
        costs: dict[str, tuple[float | None, float | None]] = {}
        raw = b""
        traced = min(calls, TRACED_CALLS)
        for chunk, traces in ((calls - traced, False), (traced, True)):
            if not chunk:
                continue
            with capture_fd(2), profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                                        with_flops=True) as prof:
                for _ in range(chunk):
                    t = time.perf_counter()
                    with record_function(_CALL):
                        self.run(batch)
                    call_ms.append((time.perf_counter() - t) * 1e3)
            for root in (e for e in prof.events() if e.name == _CALL):
                seen: Counter[str] = Counter()
                per_call.append(0.0)
                for event in _operations(root):
                    seen[event.name] += 1
                    name, leaf = f"{event.name}#{seen[event.name]}", _kernel(event)
                    kinds.setdefault(name, (event.name, leaf.name))
                    # PyTorch counts an eager convolution's or matrix product's FLOPs itself.
                    costs.setdefault(name, (_flops(event), None))
                    dtypes = leaf.input_dtypes or event.input_dtypes or [""]
                    precisions.setdefault(name, _DTYPES.get(dtypes[0], ""))
                    times.setdefault(name, []).append(event.cpu_time_total / 1e3)
                    per_call[-1] += event.cpu_time_total / 1e3
            if traces:  # not the first chunk too, where it is as long
                with tempfile.TemporaryDirectory(prefix="visionbench-torch-trace-") as tmp:
                    path = Path(tmp) / "trace.json"
                    prof.export_chrome_trace(str(path))
                    raw = path.read_bytes()
        ops = op_times(kinds, times, calls, lambda name, _: precisions[name], costs)
        return OpProfile(ops, call_ms, per_call, "torch.profiler (CPU, operator time per call)",
                         {"torch-trace.json": raw}, resolution_ms=0.001,
                         flops_from="torch.profiler's own count" if any(
                             op.flops for op in ops) else "")


class _Torch(Engine):
    module = "torch"
    extra = "torch"
    definition = "torch"
    #: Read after a run: torch/lib/libgomp.so.1 (GNU) mapped and serving omp_get_max_threads;
    #: ATen's parallel backend is OpenMP (torch.__config__.parallel_info()).
    threading = ("openmp", "GNU libgomp, shipped in torch/lib")
    #: Environment knobs measured here (benchmarks/environment.py): the compiled configuration's
    #: none yet, all searched (eager mode's below).
    environment_knobs: ClassVar[dict[str, tuple[KnobVerdict, str]]] = {}
    options = (SESSIONS,)
    compiled: ClassVar[bool]
    #: INT8 models by (model sha, calibration key): calibration runs once per process.
    _int8_cache: ClassVar[dict[tuple[str, str], tuple[Any, str, int, float]]] = {}

    def versions(self) -> dict[str, str]:
        import torch

        out = {"torch": torch.__version__}
        with contextlib.suppress(PackageNotFoundError):
            out["torchao"] = version("torchao")
        return out

    def support(self, precision: Precision, cpu: CpuFeatures) -> Support:
        if precision == "int8" and not self.compiled:
            return Support(
                "unsupported", "INT8 runs through PT2E + torch.compile: use --engine torch"
            )
        s = cpu_support(precision, cpu)
        if s.status == "emulated":
            return Support("emulated", f"{s.reason}; PyTorch converts to and from BF16 in software")
        return s

    def _int8(self, module: Any, model: ModelSpec, calibration: Calibration) -> tuple[Any, str, int, float]:
        """PT2E post-training quantization (FX graph mode if PT2E fails): module, method, count
        of quantized convolutions and linears, seconds."""
        key = (model.sha256, calibration.key)
        if key in self._int8_cache:
            return self._int8_cache[key]
        import torch

        t0 = time.perf_counter()
        samples = iter(calibration)
        # Two samples: an example batch of 1 would make export specialise the batch dimension.
        example = torch.from_numpy(np.concatenate([next(samples), next(samples)]))
        try:
            with capture_fd(2), capture_fd(1):
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
                from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

            batch = torch.export.Dim("batch", min=1, max=4096)
            # strict=True: torchvision's Bottleneck reuses one ReLU module, which non-strict
            # export turns into a partition with two outputs that the quantizer rejects.
            exported = torch.export.export(
                module, (example,), dynamic_shapes=({0: batch},), strict=True
            ).module()
            # Without VNNI, oneDNN's u8 x s8 kernels add pairs of products in 16 bits (vpmaddubsw),
            # which saturate with full-range activations: Inductor's INT8 EfficientNet-Lite0 here
            # lost the top-1 of 2 of 5 photos (26% logit error) and kept all with 7-bit
            # activations (7%). PyTorch's own x86 qconfig reduces the range the same way.
            reduce_range = not cpu_features().vnni
            quantizer = xiq.X86InductorQuantizer()
            quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
            prepared = prepare_pt2e(exported, quantizer)
            with torch.no_grad():
                for x in calibration:
                    prepared(torch.from_numpy(x))
            q = convert_pt2e(prepared)
            method = "PT2E X86InductorQuantizer (torchao), lowered by torch.compile" + (
                ", 7-bit activations (reduce_range: no VNNI)" if reduce_range else "")
            n = sum(
                1 for node in q.graph.nodes
                if "dequantize_per_channel" in str(node.target)
            )
        except Exception as e:
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

            torch.backends.quantized.engine = "x86"
            prepared = prepare_fx(module, get_default_qconfig_mapping("x86"), (example,))
            with torch.no_grad():
                for x in calibration:
                    prepared(torch.from_numpy(x))
            q = convert_fx(prepared)
            method = f"FX graph mode, 'x86' backend (PT2E failed: {describe(e)})"
            n = sum(1 for m in q.modules() if type(m).__module__.startswith("torch.ao.nn.quantized"))
        result = (q, method, n, time.perf_counter() - t0)
        self._int8_cache[key] = result
        return result

    def search_space(self, precision: Precision, threads: int) -> list[Variant]:
        return session_variants(threads)

    def own_method(self, mode: str, precision: Precision, threads: int
                   ) -> tuple[dict[str, Any] | None, str]:
        if mode == "throughput" and precision == "int8" and threads > 1 and self.compiled:
            return {"sessions": threads}, (
                "one compiled session per core, run at once: faster than one on all cores at INT8 "
                "here (benchmarks/concurrent_sessions.py, docs/measurements.md)")
        if mode == "latency" or threads == 1 or not self.compiled:
            return super().own_method(mode, precision, threads)
        return None, ("one compiled session per core, run at once, was not shown faster than one "
                      f"on all cores at {precision.upper()} here (benchmarks/concurrent_sessions.py, "
                      "docs/measurements.md)")

    def prepare(self, spec: SessionSpec) -> Session:
        model, precision, calibration, batch_size = spec.model, spec.precision, spec.calibration, spec.batch
        # With several sessions each prepares on its share of the threads, which the process
        # then keeps (PyTorch's intra-op threads are the process's): one per calling thread.
        return concurrently(spec, lambda t: self._prepare_one(
            model, precision, t, calibration, batch_size, spec.profiling))

    def _prepare_one(self, model: ModelSpec, precision: Precision, threads: int,
                     calibration: Calibration, batch_size: int, profiling: bool) -> Session:
        import torch

        t0 = time.perf_counter()
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # settable once, before any parallel work
            torch.set_num_interop_threads(1)
        t_read = time.perf_counter()
        module, definition = torch_module(model)
        t_read = time.perf_counter() - t_read
        module = module.to(memory_format=torch.channels_last)
        details: dict[str, Any] = {
            "configuration": "torch.compile (inductor, freezing)" if self.compiled else "eager",
            "definition": definition,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "memory_format": "channels_last",
            "bf16": "torch.autocast(cpu, bfloat16)" if precision == "bf16" else None,
        }
        fn: Callable[[Any], Any] = module
        quantized = None
        if precision == "int8":
            fn, details["quantizer"], quantized, secs = self._int8(module, model, calibration)
            details["quantize_seconds"] = round(secs, 3)
        if self.compiled:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            # Inductor's generated kernels mark themselves for the profiler only if built so.
            inductor_config.cpp.enable_kernel_profile = profiling
            fn = torch.compile(fn)
        session = TorchSession(fn, precision == "bf16", Execution(executed_precision="unknown"),
                               profiling)
        example = np.random.default_rng(0).standard_normal(
            model.input_shape(batch_size), dtype=np.float32
        )
        t1 = time.perf_counter()
        with warnings.catch_warnings():  # Inductor's lowering warns about its own internals
            warnings.simplefilter("ignore")
            session.run(example)  # compiles, for the compiled configuration; warms the kernels
        details["first_run_seconds"] = round(time.perf_counter() - t1, 3)
        kernels = onednn_kernels(lambda: session.run(example))
        executed = dominant_precision(by_precision(kernels))
        if not kernels:
            # No oneDNN kernel ran (e.g. BF16 convolutions on a CPU without BF16 instructions):
            # PyTorch's own kernels computed the output, in the dtype it comes out in.
            out = session.forward(example)
            first = out[0] if isinstance(out, (tuple, list)) else out
            dtype = str(first.dtype).removeprefix("torch.")
            executed = {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype)
            details["kernels"] = "PyTorch's own (no oneDNN kernel ran)"
        else:
            details["kernels"] = "oneDNN"
        session.execution = Execution(
            executed_precision=executed,
            layer_precisions=dict(kernels),
            quantized_ops=quantized,
            details=details,
            prepare_seconds=time.perf_counter() - t0, read_seconds=t_read,
        )
        return session


class TorchCompiledEngine(_Torch):
    name = "torch"
    compiled = True


class TorchEagerEngine(_Torch):
    name = "torch-eager"
    compiled = False
    #: Measured in eager mode (benchmarks/environment.py, docs/measurements.md); the compiled
    #: configuration's are not measured yet, all searched.
    environment_knobs: ClassVar[dict[str, tuple[KnobVerdict, str]]] = {
        "allocator=tcmalloc": ("acts", "throughput 1.55x [1.37-1.58], batch-1 p50 0.98x "
                                       "[0.91-1.04]; " + ENVIRONMENT_MEASURED),
        "allocator=jemalloc": ("acts", "slower: throughput 0.87x [0.75-0.96], batch-1 p50 0.81x "
                                       "[0.79-0.96]; " + ENVIRONMENT_MEASURED),
        "omp-runtime=intel": ("nothing", "throughput 1.00x [0.94-1.09], batch-1 p50 0.91x "
                                         "[0.84-1.18]; " + ENVIRONMENT_MEASURED),
        "KMP_BLOCKTIME=1": ("nothing", "throughput 1.02x [0.71-1.15], batch-1 p50 0.93x "
                                       "[0.84-1.12]; " + ENVIRONMENT_MEASURED),
        "KMP_AFFINITY=granularity=fine,compact,1,0": (
            "nothing", "throughput 1.02x [0.94-1.04], batch-1 p50 0.91x [0.89-1.11]; "
                       + ENVIRONMENT_MEASURED),
        "OMP_WAIT_POLICY=PASSIVE": ("acts", "slower: batch-1 p50 0.75x [0.70-0.87], throughput "
                                            "1.02x [0.86-1.04]; " + ENVIRONMENT_MEASURED),
        "OMP_WAIT_POLICY=ACTIVE": ("nothing", "throughput 0.90x [0.88-1.08], batch-1 p50 0.94x "
                                              "[0.92-1.17]; " + ENVIRONMENT_MEASURED),
    }
