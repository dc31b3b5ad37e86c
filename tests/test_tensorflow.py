"""The TensorFlow engine: the same function as the other engines at FP32, BF16 and INT8 honest
about this CPU, TensorFlow's own model files, and clear errors for bad ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:  # not importorskip: TensorFlow must first be
    pytest.skip("TensorFlow is not installed", allow_module_level=True)  # imported with oneDNN on

from visionbench.data.calibration import synthetic_calibration
from visionbench.engines import SessionSpec, get_engine
from visionbench.engines.tensorflow import TensorFlowEngine, onednn_bf16, onednn_int8
from visionbench.errors import VisionbenchError
from visionbench.models import onnx_weights, resolve
from visionbench.models.keras_resnet import make_keras
from visionbench.models.resnet50 import RESNET50_TINY
from visionbench.models.tensorflow_files import import_tensorflow, load_frozen
from visionbench.sysinfo import CpuFeatures, cpu_features

from conftest import vb

tf = import_tensorflow()  # sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads, as a run does


pytestmark = pytest.mark.slow  # end-to-end: make test-slow and CI run it


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def prepared(model, precision, batch=8, threads=2, n_calib=32):
    return get_engine("tensorflow").prepare(SessionSpec(model, precision, threads,
                                                        synthetic_calibration(model, n_calib), batch))


def test_fp32_equals_onnxruntime_on_the_same_weights(tiny, tiny_inputs):
    x = tiny_inputs[:8]
    want = get_engine("onnxruntime").prepare(SessionSpec(tiny, "fp32", 2, synthetic_calibration(tiny,
                                                         8), 8)).predict(x)
    session = prepared(tiny, "fp32")
    assert relative(session.predict(x), want) < 1e-3
    ex = session.execution
    assert ex.executed_precision == "fp32" and ex.layer_precisions == {"fp32": 18}  # 17 convs + fc
    d = ex.details
    assert d["intra_op_threads"] == 2 and d["inter_op_threads"] == 1 and d["onednn"] is True
    assert "transposed from NCHW" in d["input"]


def test_capability_follows_tensorflows_onednn_rules():
    e = TensorFlowEngine()
    avx2 = CpuFeatures(frozenset({"avx2", "fma"}))
    avx512 = CpuFeatures(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    spr = CpuFeatures(frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}))
    assert e.support("bf16", avx2).status == "unsupported" and "AVX-512" in e.support("bf16", avx2).reason
    assert e.support("bf16", avx512).status == "emulated"
    assert e.support("bf16", spr).status == "native"
    assert e.support("int8", avx2).status == "native" and "LiteRT" in e.support("int8", avx2).reason
    assert e.support("int8", spr) .reason == ""
    assert not onednn_int8(avx2) and onednn_int8(avx512) and not onednn_bf16(avx2)


def test_int8_runs_integer_kernels_and_keeps_top1(tiny, tiny_inputs):
    fp32 = prepared(tiny, "fp32").predict(tiny_inputs)
    ref = fp32.argmax(1)
    session = prepared(tiny, "int8", batch=32)
    ex = session.execution
    assert ex.executed_precision == "int8" and ex.quantized_ops >= 18, ex.details["compute_ops"]
    got = session.predict(tiny_inputs)
    # The random tiny model's top classes are close: on VNNI CPUs (Neural Compressor's graph on
    # oneDNN) INT8 keeps 56-59% of them, as OpenVINO's INT8 does there, with logits that still
    # correlate 0.96 with FP32's.
    assert np.isfinite(got).all() and (got.argmax(1) == ref).mean() >= 0.5
    assert np.corrcoef(got.ravel(), fp32.ravel())[0, 1] >= 0.9
    path = "LiteRT" if not onednn_int8(cpu_features()) else "Neural Compressor"
    assert ex.details["path"].startswith(path) and Path(ex.details["int8_model"]).exists()
    again = prepared(tiny, "int8", batch=32)
    assert again.execution.details["quantize_seconds"] < 1.0  # cached


def test_neural_compressor_quantizes_the_frozen_graph(tiny):
    """Neural Compressor's INT8 graph is made (and calibrated) on any CPU; running it needs one
    where TensorFlow's oneDNN runs INT8."""
    engine = TensorFlowEngine()
    frozen = engine._frozen(tiny)
    path, _ = engine._inc(tf, tiny, frozen, synthetic_calibration(tiny, 16))
    ops = [n.op for n in load_frozen(path).graph_def.node]
    assert sum("Quantized" in op and "Conv2D" in op for op in ops) == 17, sorted(set(ops))
    if onednn_int8(cpu_features()):
        x = np.random.default_rng(0).standard_normal(tiny.input_shape(4), dtype=np.float32)
        assert np.isfinite(prepared(tiny, "int8", batch=4).predict(x)).all()


@pytest.mark.skipif(onednn_bf16(cpu_features()), reason="this CPU runs BF16 in TensorFlow")
def test_bf16_is_refused_here_not_run_as_fp32(tiny, tmp_path):
    proc = vb("run", "--model", "resnet50-tiny", "--engine", "tensorflow", "--precision", "bf16",
              "--iterations", "1", "--output", str(tmp_path / "r"))
    assert proc.returncode != 0
    assert "AVX-512" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not onednn_bf16(cpu_features()), reason="TensorFlow's oneDNN has no BF16 here")
def test_bf16_runs_bfloat16_ops_and_keeps_top1(tiny, tiny_inputs):
    """The calls that are timed run the BF16 graph whose ops are recorded (grappler optimizes a
    function for the options in force at each call: with them reset after preparation, every call
    ran FP32), and an FP32 session called in between still runs FP32."""
    from visionbench import fidelity

    fp32 = prepared(tiny, "fp32")
    ref = fp32.predict(tiny_inputs)
    session = prepared(tiny, "bf16", batch=32)
    assert session.execution.executed_precision == "bf16"
    for _ in range(2):
        out = session.predict(tiny_inputs)
        assert not np.array_equal(out, ref)
        assert fidelity.numeric("logits", ref, out).snr_db >= fidelity.MIN_SNR_DB
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.7
        assert np.array_equal(fp32.predict(tiny_inputs), ref)


def test_thread_pools_cannot_change_mid_process(tiny):
    prepared(tiny, "fp32")
    with pytest.raises(VisionbenchError, match="cannot change to 1"):
        prepared(tiny, "fp32", threads=1)


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory, model_cache) -> dict[str, Path]:
    """The tiny ResNet in every TensorFlow format, with the very weights of the ONNX file."""
    d = tmp_path_factory.mktemp("tf")
    tiny = resolve("resnet50-tiny")
    model = make_keras(onnx_weights(tiny), RESNET50_TINY)
    model.save(d / "tiny.keras")
    model.save(d / "tiny.h5")
    model.export(str(d / "tiny_savedmodel"), verbose=False)
    frozen = load_frozen(d / "tiny.keras")
    tf.io.write_graph(frozen.graph_def, str(d), "tiny.pb", as_text=False)
    return {"keras": d / "tiny.keras", "h5": d / "tiny.h5", "savedmodel": d / "tiny_savedmodel",
            "pb": d / "tiny.pb"}


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel", "pb"])
def test_every_tensorflow_format_runs_the_same_function(fmt, tf_files, tiny, tiny_inputs):
    spec = resolve(str(tf_files[fmt]))
    assert spec.format == "tensorflow" and spec.layout == "NHWC" and spec.num_classes == 100
    x = tiny_inputs[:4]
    want = get_engine("onnxruntime").prepare(SessionSpec(tiny, "fp32", 2, synthetic_calibration(tiny,
                                                         8), 4)).predict(x)
    got = prepared(spec, "fp32", batch=4).predict(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert relative(got, want) < 1e-3


def test_run_a_tensorflow_file_from_the_cli(tf_files, tmp_path):
    out = tmp_path / "r"
    proc = vb("run", "--model", str(tf_files["pb"]), "--engine", "all", "--precision", "fp32,int8",
              "--mode", "latency", "--iterations", "3", "--repeats", "1", "--calibration-samples", "16",
              "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    by = {(m["engine"], m["precision"]): m for m in data["measurements"]}
    assert by["tensorflow", "fp32"]["status"] == "ok" and by["tensorflow", "int8"]["status"] == "ok"
    assert by["tensorflow", "int8"]["executed_precision"] == "int8"
    others = [m for (e, _), m in by.items() if e != "tensorflow"]
    assert others and all(m["status"] == "unsupported" and "tensorflow model" in m["reason"] for m in others)
    proc = vb("run", "--model", str(tf_files["pb"]), "--engine", "onnxruntime",
              "--output", str(tmp_path / "r2"))
    assert proc.returncode != 0 and "onnxruntime runs onnx models" in proc.stderr


def test_bad_tensorflow_files_give_one_clear_error(tf_files, tmp_path):
    no_sig = tmp_path / "no_signature"
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(no_sig))
    not_keras = tmp_path / "broken.keras"
    not_keras.write_text("not a zip")
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\x00\x13" * 100)
    pb = str(tf_files["pb"])
    cases = [
        ({"model": pb, "input_name": "images"}, "no input placeholder 'images'"),
        ({"model": pb, "output_name": "probs:0"}, "has no tensor 'probs:0'"),
        ({"model": str(no_sig)}, "has no serving signature"),
        ({"model": str(tmp_path)}, "not a TensorFlow SavedModel"),
        ({"model": str(not_keras)}, "not a readable Keras model"),
        ({"model": str(garbage)}, "not a frozen TensorFlow graph"),
        ({"weights": tf_files["keras"]}, "is not ResNet-50: it has 17 convolutions"),
        ({"model": "resnet50-tiny", "input_name": "x"}, "pick tensors of a TensorFlow model"),
    ]
    for kw, message in cases:
        with pytest.raises(VisionbenchError) as e:
            resolve(**kw)
        assert message in str(e.value) and "\n" not in str(e.value), kw


def test_bad_tensorflow_files_from_the_cli(tf_files, tmp_path):
    for args, message in [
        (["--model", str(tf_files["pb"]), "--input-name", "images"], "no input placeholder 'images'"),
        (["--weights", str(tf_files["keras"])], "is not ResNet-50"),
    ]:
        proc = vb("run", "--engine", "tensorflow", "--iterations", "1", *args,
                  "--output", str(tmp_path / "out"), timeout=120)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(err) == 1 and message in err[0], (args, proc.stderr[-2000:])


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="needs the [efficientnet] extra")
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_efficientnet_lite_in_keras_equals_its_onnx_export(name):
    from visionbench.models.zoo import efficientnet_lite

    spec = resolve(name)
    x = np.random.default_rng(5).standard_normal(spec.input_shape(2), dtype=np.float32)
    want = get_engine("onnxruntime").prepare(SessionSpec(spec, "fp32", 2, synthetic_calibration(spec,
                                                         2), 2)).predict(x)
    session = prepared(spec, "fp32", batch=2)
    assert relative(session.predict(x), want) < 1e-3
    variant = next(v for v in efficientnet_lite.VARIANTS if v.name == name)
    ops = session.execution.details["compute_ops"]
    assert ops.get("DepthwiseConv2dNative:float32", 0) + ops.get("_FusedDepthwiseConv2dNative:float32", 0) \
        == len(efficientnet_lite.module(variant)._blocks)


def test_resnet50_frozen_graph_as_weights(tmp_path):
    """A full-size ResNet-50 v1.5 frozen graph passes --weights' architecture check, v1.5 noted
    as such (no v1 warning), with the study's GFLOP per image."""
    from visionbench.models.resnet50 import RESNET50

    spec = resolve("resnet50")
    frozen = load_frozen_from_keras(make_keras(onnx_weights(spec), RESNET50), tmp_path)
    got = resolve(weights=frozen)
    assert got.source == "weights" and got.format == "tensorflow" and got.layout == "NHWC"
    assert got.notes == () and got.gflop_per_image == pytest.approx(8.18, abs=0.01)
    assert got.num_classes == 1000 and got.preprocessing == "torchvision"


def load_frozen_from_keras(model, folder: Path) -> Path:
    model.save(folder / "m.keras")
    tf.io.write_graph(load_frozen(folder / "m.keras").graph_def, str(folder), "resnet50_v1.pb", as_text=False)
    return folder / "resnet50_v1.pb"
