"""The suite's workloads: each a registered model defined in PyTorch with seeded weights, exported
to ONNX. Reduced variants run on every engine at FP32 and must compute the same function; the
full-size cards' parameters and GFLOPs must be what the definitions really have."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from visionbench.engines import SessionSpec
from visionbench.models import registry, resolve
from visionbench.models.flops import count_macs
from visionbench.models.shapes import infer

from conftest import ONNX_ENGINES

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="the workloads are built with PyTorch")

#: Generated from the registry (as timm's tests are), so a model added there is checked without
#: editing a list: the test variants (no card figures) agree across engines; the full-size
#: models defined in PyTorch have their card checked against the definition and answer once.
#: ResNet-50 (built in numpy) and the packaged EfficientNet-Lites have tests of their own
#: (test_model.py, below); every registered model is one of these (tested).
ENTRIES = registry.entries()
TINY = sorted(n for n, e in ENTRIES.items() if e.card.params is None and e.card.built_with == "torch")
TORCH_FULL = sorted(n for n, e in ENTRIES.items()
                    if e.card.params is not None and e.card.built_with == "torch")
#: Run once at full size: all but the smaller stand-ins of the suite's --quick (retinanet-512).
FULL = [n for n in TORCH_FULL if n not in {e.card.quick_stand_in for e in ENTRIES.values()}]
TASKS = {"mobilenet-v2": "classification", "mobilenet-v3-large": "classification",
         "vit-b16": "classification", "ssd-mobilenet": "detection", "retinanet": "detection",
         "retinanet-512": "detection", "deeplabv3": "segmentation"}


def _inputs(spec, n: int = 4) -> np.ndarray:
    return np.random.default_rng(3).standard_normal(spec.input_shape(n), dtype=np.float32)


def _outputs(engine: str, spec, x: np.ndarray) -> list[np.ndarray]:
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines import get_engine

    session = get_engine(engine).prepare(SessionSpec(spec, "fp32", 2, synthetic_calibration(spec, 2), len(x)))
    try:
        return session.outputs(x)
    finally:
        session.close()


@pytest.mark.parametrize("name", TINY)
def test_tiny_workload_is_the_same_function_on_every_engine(name):
    spec = resolve(name)
    card = registry.get(name).card
    assert spec.task == card.task
    x = _inputs(spec)
    engines = [*ONNX_ENGINES, "torch-eager"]
    results = {e: _outputs(e, spec, x) for e in engines}
    ref = results[engines[0]]
    assert len(ref) == len(spec.outputs) == (2 if card.task == "detection" else 1)
    for out in ref:
        assert out.shape[0] == len(x) and np.isfinite(out).all()
        # Seeded weights with batch norms set from data: different images, different outputs.
        assert np.std(out, axis=0).mean() > 1e-3 * (np.abs(out).mean() + 1e-6)
    for e, outs in results.items():
        for a, b in zip(outs, ref, strict=True):
            err = np.linalg.norm(a - b) / np.linalg.norm(b)
            assert err < 1e-3, f"{name} on {e}: relative error {err:.2e} against {engines[0]}"


def test_tiny_output_shapes():
    det = resolve("ssd-mobilenet-tiny")
    boxes, scores = _outputs("onnxruntime", det, _inputs(det, 2))
    assert boxes.shape[-1] == 4 and scores.shape[:2] == boxes.shape[:2]
    assert scores.shape[-1] == 5 and ((scores >= 0) & (scores <= 1)).all()
    seg = resolve("deeplabv3-tiny")
    (logits,) = _outputs("onnxruntime", seg, _inputs(seg, 2))
    assert logits.shape == (2, 5, 128, 128)


def test_anchor_counts_are_the_published_ones():
    from visionbench.models.zoo import retinanet, ssd_mobilenet

    assert len(ssd_mobilenet.anchors(ssd_mobilenet.SSD)[0]) == 1917
    assert len(retinanet.anchors(retinanet.RETINANET)) == 120087
    assert len(retinanet.anchors(retinanet.RETINANET_512)) == 49104


def test_every_registered_model_is_checked_by_a_generated_or_its_own_test():
    own = {"resnet50", "resnet50-tiny"} | {f"efficientnet-lite{i}" for i in range(3)}
    assert set(ENTRIES) == set(TINY) | set(TORCH_FULL) | own
    assert {"mobilenet-v2-tiny", "vit-tiny", "retinanet-tiny", "deeplabv3-tiny"} <= set(TINY)
    assert {"mobilenet-v2", "vit-b16", "retinanet", "retinanet-512"} <= set(TORCH_FULL)


@pytest.mark.parametrize("name", TORCH_FULL)
def test_full_size_card_figures_are_the_definitions(name):
    """Parameters and multiply-accumulates counted on the definition itself (meta tensors: no
    arithmetic), against the card; the ONNX counter against PyTorch's own."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    entry = registry.get(name)
    card = entry.card
    assert card.task == TASKS.get(name, card.task)
    from visionbench.models import seeded_torch

    with torch.device("meta"):
        module = seeded_torch.MAKERS[name]()
    assert sum(p.numel() for p in module.parameters()) == card.params
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        module.eval()(torch.zeros(1, card.channels, card.height, card.width))
    assert counter.get_total_flops() / 1e9 == pytest.approx(card.gflop_per_image, rel=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None,
                    reason="needs the [efficientnet] extra")
def test_efficientnet_lite_card_figures_are_the_definitions():
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from torch.utils.flop_counter import FlopCounterMode

    from visionbench.models.zoo.efficientnet_lite import VARIANTS

    assert [v.name for v in VARIANTS] == [f"efficientnet-lite{i}" for i in range(3)]
    for v in VARIANTS:
        card = registry.get(v.name).card
        assert (card.height, card.width, card.weights) == (v.size, v.size, "packaged")
        with torch.device("meta"):
            module = EfficientNet.from_name(v.name).eval()
        assert sum(p.numel() for p in module.parameters()) == card.params
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, 3, v.size, v.size))
        assert counter.get_total_flops() / 1e9 == pytest.approx(card.gflop_per_image, rel=1e-6)


def test_onnx_mac_count_matches_resnet_arithmetic(tiny):
    import onnx

    from visionbench.models.resnet50 import RESNET50_TINY, macs

    model = onnx.load(str(tiny.path))
    assert count_macs(infer(model, [1, 3, 64, 64])) == macs(RESNET50_TINY)
    assert tiny.gflop_per_image == pytest.approx(2 * macs(RESNET50_TINY) / 1e9)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_workload_answers_one_image(name):
    """Each full-size workload built and run once at batch 1, FP32, on OpenVINO: the outputs its
    card describes, finite and depending on the input."""
    spec = resolve(name)
    card = registry.get(name).card
    assert spec.input_shape(1) == (1, card.channels, card.height, card.width)
    a, b = (_outputs("openvino", spec, x[None]) for x in _inputs(spec, 2))
    assert len(a) == (2 if card.task == "detection" else 1)
    for x, y in zip(a, b, strict=True):
        assert x.shape[0] == 1 and np.isfinite(x).all() and not np.allclose(x, y)
    if card.task == "classification":
        assert a[0].shape == (1, card.num_classes)
    elif card.task == "segmentation":
        assert a[0].shape == (1, card.num_classes, card.height, card.width)
    else:
        assert a[0].shape[-1] == 4 and a[1].shape[:2] == a[0].shape[:2]
        assert a[1].shape[-1] == card.num_classes
