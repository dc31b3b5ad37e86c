"""Bringing one's own ONNX model: input name, shape and layout read from the file; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench.engines import SessionSpec
from visionbench.errors import VisionbenchError
from visionbench.models import resolve

from conftest import ONNX_ENGINES, small_onnx


def test_nchw_dynamic_batch(tmp_path):
    spec = resolve(str(small_onnx(tmp_path / "m.onnx", ["batch", 3, 96, 128])))
    assert (spec.layout, spec.input_name, spec.fixed_batch) == ("NCHW", "image", None)
    assert spec.input_shape(5) == (5, 3, 96, 128)
    assert spec.source == "file" and spec.num_classes == 10
    spec.check_batch(116)


def test_nhwc_fixed_batch_conflict(tmp_path):
    spec = resolve(str(small_onnx(tmp_path / "m.onnx", [4, 64, 64, 3], "NHWC")))
    assert spec.layout == "NHWC" and spec.input_shape(4) == (4, 64, 64, 3)
    spec.check_batch(4)
    with pytest.raises(VisionbenchError, match="fixed batch size of 4"):
        spec.check_batch(116)


def test_dynamic_spatial_size_is_noted(tmp_path):
    spec = resolve(str(small_onnx(tmp_path / "m.onnx", ["N", 3, "H", "W"])))
    assert spec.input_shape(1) == (1, 3, 224, 224)
    assert "dynamic" in spec.notes[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "model file not found"),
        (lambda p: (p.write_text("not a model at all\n" * 20), p)[1], "not"),
        (lambda p: (p.write_bytes(b"\x00\x01\x02garbage" * 100), p)[1], "not"),
        (lambda p: small_onnx(p, ["N", 16]), "no image-like input"),
        (lambda p: small_onnx(p, ["N", 7, 32, 32]), "no image-like input"),
    ],
    ids=["missing", "text", "binary", "2d-input", "7-channels"],
)
def test_bad_model_files(tmp_path, make, message):
    path = make(tmp_path / "bad.onnx")
    with pytest.raises(VisionbenchError, match=message):
        resolve(str(path))


def test_mlperf_style_model_with_argmax_first_and_1001_classes(tmp_path):
    """MLPerf's resnet50_v1.onnx lists an int64 ArgMax before its 1001-class softmax, and its class
    0 is background: the float output is taken, labels are shifted, MLPerf preprocessing chosen."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines import get_engine

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1001, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input_tensor:0"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["softmax_tensor:0"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["ArgMax:0"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "mlperf-like",
        [helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("softmax_tensor:0", TensorProto.FLOAT, ["N", 1001])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "resnet50_v1.onnx"
    onnx.save(model, str(path))
    spec = resolve(str(path))
    assert spec.output_name == "softmax_tensor:0" and spec.num_classes == 1001
    assert spec.label_offset == 1 and spec.preprocessing == "mlperf"
    x = np.random.default_rng(1).standard_normal(spec.input_shape(2), dtype=np.float32)
    for name in ONNX_ENGINES:
        out = get_engine(name).prepare(SessionSpec(spec, "fp32", 2, synthetic_calibration(spec, 4),
                                                   2)).predict(x)
        assert out.shape == (2, 1001) and np.allclose(out.sum(axis=1), 1, atol=1e-4), name
