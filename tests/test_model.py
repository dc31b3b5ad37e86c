"""The built-in ResNet-50 v1.5: topology, size, determinism, and that it depends on its input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from visionbench.models import build_builtin, registry, resolve
from visionbench.models.resnet50 import (
    RESNET50,
    RESNET50_TINY,
    forward,
    layout,
    macs,
    parameter_count,
    seeded_weights,
)


def test_resnet50_v1_5_topology_and_size():
    _, blocks = layout(RESNET50)
    assert [b.prefix for b in blocks].count("layer3.5") == 1
    assert len(blocks) == 16  # [3, 4, 6, 3]
    first_of_stage2 = next(b for b in blocks if b.prefix == "layer2.0")
    # v1.5: the stride sits on the 3x3 convolution, not the first 1x1.
    assert [c.stride for c in first_of_stage2.convs] == [1, 2, 1]
    assert first_of_stage2.downsample is not None and first_of_stage2.downsample.stride == 2
    assert parameter_count(RESNET50) == 25_557_032  # torchvision's resnet50
    assert macs(RESNET50) == pytest.approx(4.09e9, rel=0.01)


def test_onnx_graph_matches_reference_forward(tiny, tiny_inputs):
    sd = seeded_weights(RESNET50_TINY)
    expected = forward(sd, RESNET50_TINY, tiny_inputs[:8])
    sess = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {tiny.input_name: tiny_inputs[:8]})[0]
    assert got.shape == (8, RESNET50_TINY.num_classes)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_outputs_finite_and_depend_on_input(tiny):
    """On images with content (white noise has none: the seeded network answers it alike)."""
    from visionbench.data.synthetic import model_images

    sess = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {tiny.input_name: model_images(tiny, 32, seed=7)})[0]
    assert np.isfinite(logits).all()
    top1 = logits.argmax(axis=1)
    assert len(set(top1.tolist())) > len(top1) // 2, top1


def test_weights_are_deterministic(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path))
    again = resolve("resnet50-tiny")
    assert again.path != tiny.path
    assert again.sha256 == tiny.sha256
    assert resolve("resnet50-tiny", seed=1).sha256 != tiny.sha256


def test_builtin_model_is_cached(tiny):
    path = build_builtin("resnet50-tiny")
    assert path == tiny.path and path.stat().st_mtime == tiny.path.stat().st_mtime


@pytest.mark.slow
def test_full_resnet50_graph():
    spec = resolve("resnet50")
    assert spec.input_shape(1) == (1, 3, 224, 224)
    assert spec.num_classes == 1000 and spec.fixed_batch is None
    assert spec.gflop_per_image == pytest.approx(8.18, rel=0.01)
    graph = onnx.load(str(spec.path), load_external_data=False).graph
    assert sum(n.op_type == "Conv" for n in graph.node) == 53
    assert "resnet50" in registry.entries()
