"""Bringing one's own ONNX model: input name, shape and layout read from the file; clear errors."""

from __future__ import annotations

import pytest

from visionbench.errors import VisionbenchError
from visionbench.models import resolve

from conftest import small_onnx


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
