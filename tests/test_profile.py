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
    *_cases("fp32", "openvino", "onnxruntime", "torch-eager", "tensorflow"),
    # PyTorch compiled (Inductor's kernels marked) and TensorFlow's INT8: 10-30 s to build.
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
