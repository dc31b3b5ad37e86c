"""Real engines on the reduced model: same function at FP32, agreement of lower precisions,
what really ran recorded, capability checks honest on this CPU. (PyTorch's INT8 and BF16 are
tested in test_torch.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.data.calibration import synthetic_calibration
from visionbench.engines import SessionSpec, get_engine
from visionbench.models import resolve
from visionbench.models.resnet50 import RESNET50_TINY, forward, seeded_weights
from visionbench.sysinfo import CpuFeatures, cpu_features

from conftest import ENGINE_NAMES, ONNX_ENGINES, small_onnx

pytestmark = pytest.mark.skipif(not ENGINE_NAMES, reason="no engine installed")


def run_all(session, inputs: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([session.predict(inputs[i: i + batch]) for i in range(0, len(inputs), batch)])


def prepared(engine_name, model, precision, batch=8, n_calib=32):
    engine = get_engine(engine_name)
    return engine.prepare(SessionSpec(model, precision, 2, synthetic_calibration(model, n_calib), batch))


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_fp32_matches_reference(engine_name, tiny, tiny_inputs):
    session = prepared(engine_name, tiny, "fp32")
    got = run_all(session, tiny_inputs, 8)
    want = forward(seeded_weights(RESNET50_TINY), RESNET50_TINY, tiny_inputs)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-3
    assert session.execution.executed_precision == "fp32"
    assert session.execution.quantized_ops is None


@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_int8_runs_quantized_and_agrees(engine_name, tiny, tiny_inputs):
    ref = run_all(prepared(engine_name, tiny, "fp32"), tiny_inputs, 8).argmax(1)
    session = prepared(engine_name, tiny, "int8")
    ex = session.execution
    assert ex.executed_precision == "int8", ex
    # Every convolution and the classifier of the tiny ResNet runs in integer arithmetic.
    assert ex.quantized_ops >= 17, ex.layer_precisions
    assert ex.details["quantizer"] and ex.details["int8_model"]
    got = run_all(session, tiny_inputs, 8)
    assert np.isfinite(got).all()
    agreement = (got.argmax(1) == ref).mean()
    assert agreement >= 0.6, agreement


@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_int8_model_is_cached(engine_name, tiny):
    first = prepared(engine_name, tiny, "int8")
    again = prepared(engine_name, tiny, "int8")
    assert first.execution.details["int8_model"] == again.execution.details["int8_model"]
    assert again.execution.details["quantize_seconds"] < 1.0  # read from cache, not re-run


def test_bf16_capability_follows_the_cpu():
    ov = pytest.importorskip("visionbench.engines.openvino").OpenVINOEngine()
    with_bf16 = CpuFeatures(frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}))
    avx2_only = CpuFeatures(frozenset({"avx2", "fma"}))
    assert ov.support("bf16", with_bf16).status == "native"
    assert ov.support("bf16", avx2_only).status == "unsupported"
    assert "avx512_bf16" in ov.support("bf16", avx2_only).reason
    assert ov.support("int8", with_bf16).reason == ""
    assert "VNNI" in ov.support("int8", avx2_only).reason


def test_onnxruntime_never_claims_bf16():
    ort = pytest.importorskip("visionbench.engines.onnxruntime").OnnxRuntimeEngine()
    amx = CpuFeatures(frozenset({"avx512_bf16", "amx_bf16", "amx_int8"}))
    assert ort.support("bf16", amx).status == "unsupported"


@pytest.mark.skipif(not cpu_features().bf16, reason="this CPU has no native BF16")
def test_openvino_bf16_runs_bf16_and_agrees(tiny, tiny_inputs):
    ref = run_all(prepared("openvino", tiny, "fp32"), tiny_inputs, 8).argmax(1)
    session = prepared("openvino", tiny, "bf16")
    assert session.execution.executed_precision == "bf16"
    assert (run_all(session, tiny_inputs, 8).argmax(1) == ref).mean() >= 0.7


@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_nhwc_user_model_runs(engine_name, tmp_path):
    spec = resolve(str(small_onnx(tmp_path / "nhwc.onnx", ["N", 32, 32, 3], "NHWC")))
    out = prepared(engine_name, spec, "fp32", batch=3).predict(
        np.ones(spec.input_shape(3), np.float32))
    assert out.shape == (3, 10) and np.isfinite(out).all()


@pytest.mark.skipif("openvino" not in ENGINE_NAMES, reason="OpenVINO not installed")
def test_a_closed_openvino_session_is_freed(tiny, tiny_inputs):
    """Requests hold their callbacks inside OpenVINO: a closed session must not stay alive
    through them (a tune run held every session it explored, 22 GiB by its end)."""
    import gc
    import threading
    import weakref

    session = get_engine("openvino").prepare(SessionSpec(tiny, "fp32", 1, synthetic_calibration(tiny,
                                                         4), 4, {"streams": 2, "requests": 2}))
    done = threading.Semaphore(0)
    for slot in range(2):
        session.start(slot, session.feed(tiny_inputs[:4]), done.release)
    for _ in range(2):
        assert done.acquire(timeout=60)
    ref = weakref.ref(session)
    session.close()
    del session
    gc.collect()
    assert ref() is None
