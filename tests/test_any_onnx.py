"""Any ONNX model, not only classifiers: a detector with a dynamic spatial input set by
--input-shape, a model with two outputs, the task inferred or checked, a shape the model refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionbench.errors import VisionbenchError
from visionbench.models import resolve

from conftest import ONNX_ENGINES, vb

CLASSES = 3


def detector(path: Path) -> Path:
    """A toy single-shot detector on a dynamic N x 3 x H x W input: a stride-8 convolution to 2
    anchors x 4 box codes and to 2 anchors x 3 class scores per cell; outputs boxes [N, A, 4]
    and sigmoid scores [N, A, 3], A = 2 x (H/8) x (W/8)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 8, 8)).astype(np.float32) * 0.1, "wb"),
             numpy_helper.from_array(rng.standard_normal((2 * CLASSES, 3, 8, 8)).astype(np.float32) * 0.1,
                                     "wc"),
             numpy_helper.from_array(np.array([0, -1, 4], np.int64), "box_shape"),
             numpy_helper.from_array(np.array([0, -1, CLASSES], np.int64), "cls_shape")]
    nodes = [
        helper.make_node("Conv", ["image", "wb"], ["b"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Transpose", ["b"], ["bt"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["bt", "box_shape"], ["boxes"]),
        helper.make_node("Conv", ["image", "wc"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["ct", "cls_shape"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "toy_detector", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                              ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", "A", 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "A", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def two_outputs(path: Path, size: int | None = 32) -> Path:
    """A classifier on [N, 3, size, size] (dynamic where size is None) whose flattened feature map
    feeds a fully connected layer for 32x32 inputs, with the features as a second output."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((10, 4 * 8 * 8)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["features"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Flatten", ["features"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    dims = ["N", 3, size or "H", size or "W"]
    graph = helper.make_graph(
        nodes, "two_outputs", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, None, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_detector_is_recognised_and_its_input_shape_set(tmp_path):
    spec = resolve(str(detector(tmp_path / "det.onnx")), input_shape=[1, 3, 128, 96])
    assert spec.task == "detection" and spec.outputs == ("boxes", "scores")
    assert (spec.height, spec.width) == (128, 96) and spec.fixed_batch is None
    assert spec.num_classes is None
    assert spec.gflop_per_image == pytest.approx(2 * (8 + 6) * 16 * 12 * 3 * 64 / 1e9)
    default = resolve(str(tmp_path / "det.onnx"))
    assert (default.height, default.width) == (640, 640)
    assert any("detection default" in n for n in default.notes)


def test_two_outputs_and_the_task(tmp_path):
    spec = resolve(str(two_outputs(tmp_path / "two.onnx")))
    assert spec.task == "other"  # a 4-D feature map beside the logits: not clearly a classifier
    assert spec.outputs == ("logits", "features")
    cls = resolve(str(tmp_path / "two.onnx"), task="classification")
    assert cls.task == "classification" and cls.output_name == "logits" and cls.num_classes == 10
    with pytest.raises(VisionbenchError, match=r"--task detection contradicts the outputs of two\.onnx"):
        resolve(str(tmp_path / "two.onnx"), task="detection")


def test_a_shape_the_model_refuses_is_one_clear_error(tmp_path):
    path = two_outputs(tmp_path / "dyn.onnx", size=None)
    assert resolve(str(path), input_shape=[1, 3, 32, 32]).height == 32
    with pytest.raises(VisionbenchError, match=r"refuses input shape \[1, 3, 64, 64\]"):
        resolve(str(path), input_shape=[1, 3, 64, 64])
    with pytest.raises(VisionbenchError, match="dimension 2 is fixed at 32"):
        resolve(str(two_outputs(tmp_path / "fixed.onnx")), input_shape=[1, 3, 64, 64])
    with pytest.raises(VisionbenchError, match="--input-shape has 3 dimensions"):
        resolve(str(path), input_shape=[3, 64, 64])


@pytest.mark.parametrize("args, message", [
    (["--input-shape", "1,3,x,64"], "--input-shape must be positive integers"),
    (["--task", "detection", "--input-shape", "1,3,32,32"],
     "--task detection contradicts the outputs of m.onnx"),
    (["--input-shape", "1,3,64,64"], "m.onnx refuses input shape [1, 3, 64, 64]"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    path = two_outputs(tmp_path / "m.onnx", size=None)
    proc = vb("run", "--model", str(path), *args, "--quick", "--output", str(tmp_path / "o"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.slow
def test_a_detector_file_is_timed_at_every_precision_with_fidelity(tmp_path):
    from visionbench.engines import get_engine
    from visionbench.sysinfo import cpu_features

    path = detector(tmp_path / "det.onnx")
    out = tmp_path / "run"
    engines = [e for e in ONNX_ENGINES if e in ("openvino", "onnxruntime")]
    proc = vb("run", "--model", str(path), "--input-shape", "1,3,64,64", "--engine",
              ",".join(engines), "--quick", "--duration", "0.2", "--calibration-samples", "8",
              "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["model"]["task"] == "detection" and doc["model"]["outputs"] == ["boxes", "scores"]
    assert doc["model"]["input_shape_per_image"] == [3, 64, 64]
    ms = doc["measurements"]
    cpu = cpu_features()
    for e in engines:
        for p in ("fp32", "bf16", "int8"):
            native = get_engine(e).support(p, cpu).status == "native"
            got = {m["status"] for m in ms if (m["engine"], m["precision"]) == (e, p)}
            if native:
                assert got == {"ok"}, (e, p)
            else:
                assert got and got <= {"unsupported", "skipped"}, (e, p)
    for m in ms:
        if m["status"] != "ok" or m["precision"] == "fp32":
            assert m["fidelity"] is None
            continue
        f = m["fidelity"]
        assert [o["output"] for o in f["outputs"]] == ["boxes", "scores"]
        assert all(np.isfinite(o["rel_error"]) for o in f["outputs"])
        assert f["task"] == {} and "synthetic inputs" in f["task_reason"]
    assert "fidelity" in (out / "summary.md").read_text()
