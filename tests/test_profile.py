"""Per-operation profiles from each engine's own profiler (OpenVINO's performance counters, ONNX
Runtime's session profiling) on the tiny model: every executed operation named with its type,
kernel and precision, times that add up to about the profiled call, and the engine's files."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from visionbench.data.calibration import synthetic_calibration
from visionbench.engines import SessionSpec, get_engine
from visionbench.models.flops import is_compute, op_flops

from conftest import TINY, vb


def _cases(precision: str, *names: str, slow: tuple[str, ...] = ()) -> list:
    return [pytest.param(name, precision, marks=[pytest.mark.skipif(
        not get_engine(name).installed(), reason=f"{name} not installed")]
        + [pytest.mark.slow] * (name in slow), id=f"{name}-{precision}") for name in names]


ENGINES = [pytest.param(c.values[0], marks=c.marks) for c in _cases("fp32", "openvino", "onnxruntime")]
FILES = {"openvino": {"openvino-exec-graph.xml", "openvino-trace.json"},
         "onnxruntime": {"onnxruntime-trace.json"}, "torch": {"torch-trace.json"},
         "torch-eager": {"torch-trace.json"}, "tensorflow": {"tensorflow-trace.json"}}


def _profile(engine_name: str, model, precision: str, calls: int = 9):
    engine = get_engine(engine_name)
    spec = SessionSpec(model, precision, 2, synthetic_calibration(model, 16), 1, profiling=True)
    session = engine.prepare(spec)
    try:
        x = session.feed(np.random.default_rng(0).random(model.input_shape(1), np.float32))
        return session.profile(x, calls, warmup=2)
    finally:
        session.close()


@pytest.mark.parametrize(("engine_name", "precision"), [
    *_cases("fp32", "openvino", "onnxruntime", "torch-eager", "tensorflow", slow=("tensorflow",)),
    # TensorFlow (4 s), PyTorch compiled (Inductor's kernels marked) and TensorFlow's INT8
    # (10-30 s to build) under the slow marker.
    *_cases("int8", "openvino", "onnxruntime", "torch", "tensorflow", slow=("torch", "tensorflow")),
])
def test_every_executed_operation_is_named_and_timed(engine_name, precision, tiny):
    prof = _profile(engine_name, tiny, precision)
    assert len(prof.call_ms) == 9 and all(0 < t < 1000 for t in prof.call_ms)
    assert len(prof.ops) >= 10 and all(math.isfinite(op.ms) and op.ms >= 0 for op in prof.ops)
    assert len({op.name for op in prof.ops}) == len(prof.ops)
    types = {op.op_type for op in prof.ops}
    convs = [op for op in prof.ops if "conv" in op.op_type.lower()]
    assert convs, types
    # The convolutions compute in the precision asked for (the tiny model's all quantize).
    assert {op.precision for op in convs} == {precision}, [(op.name, op.precision) for op in convs]
    assert all(op.kernel for op in convs)
    # The operations add up to about the calls (never more, but for the profiler's resolution:
    # whole microseconds per operation, on this tiny model of about 30 operations of a few
    # microseconds each up to 0.03 ms; the rest is the engine's own time between operations
    # and Python's call): each call's own where the profiler gives them, else their means.
    slack = len(prof.ops) * prof.resolution_ms
    total = sum(op.ms for op in prof.ops)
    if prof.ops_per_call_ms is None:  # OpenVINO: a mean per operation
        mean = float(np.mean(prof.call_ms))
        assert 0.2 * mean < total < mean + slack, (engine_name, total, prof.call_ms)
    else:
        assert len(prof.ops_per_call_ms) == len(prof.call_ms)
        for ops_ms, call in zip(prof.ops_per_call_ms, prof.call_ms, strict=True):
            assert 0.2 * call < ops_ms < call + slack, (prof.ops_per_call_ms, prof.call_ms)
    # FLOPs per operation where the engine gives its shapes (or counts them itself): the
    # convolutions' and matrix products' add up to the model's own count from its graph.
    # ONNX Runtime's FP32 convolutions run in NCHWc blocks, which pad this tiny model's 8
    # channels to 16 (ResNet-50's are whole blocks): its trace's shapes are what ran. Its INT8
    # trace leaves out the prepacked weights, and Inductor's and TensorFlow's kernels name no
    # shapes: those are counted per operation type by the scenario.
    flops, model = sum(op.flops or 0 for op in prof.ops), tiny.gflop_per_image * 1e9
    if (engine_name, precision) in {("openvino", "fp32"), ("openvino", "int8"),
                                    ("torch-eager", "fp32")}:
        assert flops == pytest.approx(model, rel=0.02) and all(op.flops for op in convs)
    elif (engine_name, precision) == ("onnxruntime", "fp32"):
        assert model < flops < 4 * model and all(op.flops for op in convs)
    else:
        assert not all(op.flops for op in convs)
    assert set(prof.files) == FILES[engine_name]
    for name, data in prof.files.items():
        if name.endswith(".json"):  # a Chrome/Perfetto trace
            trace = json.loads(data)
            events = trace["traceEvents"] if isinstance(trace, dict) else trace
            assert sum(1 for e in events if e.get("ph") == "X") >= len(prof.ops)
        else:
            assert ET.fromstring(data).tag == "net"


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_session_not_prepared_for_it_gives_no_profile(engine_name, tiny):
    engine = get_engine(engine_name)
    session = engine.prepare(SessionSpec(tiny, "fp32", 1, synthetic_calibration(tiny, 16), 1))
    try:
        x = session.feed(np.zeros(tiny.input_shape(1), np.float32))
        with pytest.raises(NotImplementedError, match=r"(prepared|compiled) for profiling"):
            session.profile(x, 2, 1)
    finally:
        session.close()


def test_the_profile_command_records_and_reports_where_the_time_goes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", "{}")  # an engine with no profiler
    proc = vb("profile", *TINY, "--engine", "onnxruntime,fake", "--precision", "fp32",
              "--iterations", "5", "--warmup", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["measurements"] == []  # profiled only: nothing timed for the tables
    recs = {r["engine"]: r for r in results["profiles"]}
    ort = recs["onnxruntime"]
    assert ort["status"] == "ok" and ort["calls"] == 5 and ort["batch_size"] == 1
    assert 0 < ort["p50_ms"] < 1000 and 0 < ort["profiled_p50_ms"] < 1000
    assert 0.2 < ort["coverage"] <= 1.05
    assert ort["ops"][0]["ms"] == max(op["ms"] for op in ort["ops"])  # slowest first
    assert abs(sum(op["share"] for op in ort["ops"]) - 1) < 1e-6
    assert abs(sum(ort["by_type"].values()) - ort["ops_ms"]) < 1e-6 and "Conv" in ort["by_type"]
    # The convolutions' and matrix products' FLOPs from the trace's shapes, over their time.
    assert ort["flops_from"] == "the shapes in ONNX Runtime's trace"
    assert ort["compute_flops"] > 0 and 0 < ort["compute_ms"] <= ort["ops_ms"]
    assert all(op["flops"] > 0 and op["bytes"] > 0 for op in ort["ops"] if op["op_type"] == "Conv")
    assert ort["ms_added_by_profiler"] == pytest.approx(ort["profiled_p50_ms"] - ort["p50_ms"])
    [trace] = ort["files"]
    assert trace == "profiles/profile-onnxruntime-fp32/onnxruntime-trace.json"
    assert any(e.get("cat") == "Node" for e in json.loads((out / trace).read_text()))
    # An engine without a profiler: said so, never a made-up profile.
    assert recs["fake"]["status"] == "unsupported" and recs["fake"]["ops"] == []
    assert recs["fake"]["reason"] == "fake: FakeSession gives no per-operation profile"
    md = (out / "summary.md").read_text()
    assert "## Where the batch-1 time goes (--mode profile)" in md
    assert "## Slowest operations: profile-onnxruntime-fp32" in md
    assert "Where the batch-1 time goes" in (out / "report.html").read_text()
    assert "Slowest operations: profile-onnxruntime-fp32" in proc.stdout


def test_an_operations_flops_come_from_the_shapes_it_ran_with():
    # A 7x7 convolution of 3 channels into 16, NCHW, and the same in ONNX Runtime's NCHWc
    # blocks (16 channels as 2 x 8): 2 x output elements x (3 x 7 x 7) products each.
    conv = 2 * 16 * 32 * 32 * 3 * 7 * 7
    assert op_flops("Conv", [[1, 3, 64, 64], [16, 3, 7, 7], [16]], [1, 16, 32, 32]) == conv
    assert op_flops("FusedConv", [[1, 3, 64, 64], [2, 3, 7, 7, 8]], [1, 2, 32, 32, 8]) == conv
    assert op_flops("aten::addmm", [[4, 2048], [2048, 1000]], [4, 1000]) == 2 * 4 * 1000 * 2048
    assert op_flops("FullyConnected", [[1, 2048], [1000, 2048]], [1, 1000]) == 2 * 1000 * 2048
    assert op_flops("QLinearAdd", [[1, 8, 4, 4], [1, 8, 4, 4]], [1, 8, 4, 4]) is None
    assert op_flops("Conv", [[1, 3, 64, 64]], [1, 16, 32, 32]) is None  # no weight: unknown
    assert not is_compute("aten::contiguous") and is_compute("onednn::qconv_pointwise")


def test_a_torch_operations_kernel_is_the_operator_under_it_that_computes():
    """The kernel named for an operator, and the precision read from its input: the operator
    under it that took most of its time, never a scalar read or an allocation beside it (a
    first INT8 call once read its zero point in ``aten::item`` for most of the convolution's
    time, and the convolution was shown with no precision)."""
    from types import SimpleNamespace

    from visionbench.engines.pytorch import _kernel

    def ev(name, dtypes, ms, *children):
        return SimpleNamespace(name=name, input_dtypes=dtypes, cpu_time_total=ms,
                               cpu_children=list(children))

    item = ev("aten::item", ["int"], 8.0, ev("aten::_local_scalar_dense", ["int"], 8.0))
    assert _kernel(ev("onednn::qconv_pointwise", ["unsigned char", "float"], 10.0, item)).name \
        == "onednn::qconv_pointwise"
    mkldnn = ev("aten::mkldnn_convolution", ["float"], 9.0)
    conv = ev("aten::conv2d", ["float"], 10.0, ev("aten::empty", [], 0.5),
              ev("aten::convolution", ["float"], 9.5, mkldnn))
    assert _kernel(conv) is mkldnn
    autocast = ev("aten::conv2d", ["float"], 10.0, ev("aten::to", ["float"], 1.0),
                  ev("aten::conv2d", ["c10::BFloat16"], 9.0))
    assert _kernel(autocast).input_dtypes == ["c10::BFloat16"]


def test_an_operations_place_on_the_roofline():
    """GFLOP/s over the machine's peak, and over the roofline's bound: the peak, or the memory
    bandwidth times the operation's FLOPs per byte where that is lower (made-up machine)."""
    from types import SimpleNamespace

    from visionbench.reporting.format import roofline
    from visionbench.results.schema import Bandwidth, MachinePeak, PeakRate

    peak = MachinePeak(rates={"fp32": PeakRate(gops=200.0, isa="made-up FMA", threads=2)},
                       bandwidth=Bandwidth(gbs=40.0, threads=2, array_mib=64))
    results = SimpleNamespace(system=SimpleNamespace(peak=peak, bf16_native=True))
    # 1e8 FLOPs in 1 ms: 100 GFLOP/s, half the peak; moving 1e6 bytes (100 FLOPs a byte) it is
    # bound by the peak (40 GB/s x 100 = 4000 > 200); moving 1e8 (1 a byte), by 40 GB/s.
    assert roofline(results, "fp32", 1e8, 1.0, 1e6) == pytest.approx((100.0, 0.5, 0.5))
    assert roofline(results, "fp32", 1e8, 1.0, 1e8) == pytest.approx((100.0, 0.5, 2.5))
    assert roofline(results, "int8", 1e8, 1.0) == (pytest.approx(100.0), None, None)  # no peak
    assert roofline(results, "fp32", None, 1.0) == (None, None, None)


def test_profile_flag_adds_the_profile_to_a_run(tmp_path):
    """`run --profile` (and `suite --profile`) profiles after the timed measurements, as
    `--mode ...,profile` does; without it, no profile."""
    from visionbench.api import study_config

    def cfg(**kw):
        return study_config(model="resnet50-tiny", engines="onnxruntime", output=tmp_path, **kw)

    assert cfg(profile=True).study.profile and cfg(profile=True).study.modes == [
        "throughput", "latency"]
    assert cfg(modes="latency,profile").study.profile
    assert not cfg().study.profile and not cfg(profile=False).study.profile
