"""Seeded networks about as robust to rounding as trained ones: a classifier that reads what differs
between images, and the built-in ResNet-50 and ViT-B/16 within the fidelity threshold at BF16 and
INT8 on correct engines (a deliberately broken INT8 is flagged: tests/test_fidelity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench import fidelity
from visionbench.models import seeding
from visionbench.models.resnet50 import RESNET50_TINY, seeded_weights
from visionbench.sysinfo import cpu_features

from conftest import ONNX_ENGINES


def test_the_classifier_reads_the_directions_images_differ_in():
    rng = np.random.default_rng(0)
    images, width, classes = 32, 64, 1000
    # features that differ between images in 3 directions, around a common mean
    directions = np.linalg.qr(rng.standard_normal((width, 3)))[0].T
    feats = rng.standard_normal((images, 3)) * [5.0, 3.0, 2.0] @ directions + 7.0
    weight, bias = seeding.principal_classifier(feats, classes, np.random.default_rng(1))
    assert weight.shape == (classes, width) and bias.shape == (classes,)
    logits = feats @ weight.T + bias
    assert np.abs(logits.mean(axis=0)).max() < 1e-4  # centred on the images' mean
    assert np.var(logits) == pytest.approx(1.0, rel=0.2)
    assert len(set(logits.argmax(axis=1).tolist())) > images // 4  # the images are told apart
    # rounding noise off those directions does not reach the logits; along them, it does
    other = np.linalg.qr(np.c_[directions.T, rng.standard_normal((width, 1))])[0][:, 3]
    assert np.abs(other @ weight.T).max() < 1e-4
    assert np.abs(directions[0] @ weight.T).max() > 0.01


def test_seeded_weights_have_no_zero_or_denormal_values():
    sd = seeded_weights(RESNET50_TINY)
    for key, w in sd.items():
        if key.endswith("running_mean"):
            continue  # batch statistics: a mean can be anything
        assert np.isfinite(w).all(), key
        assert np.abs(w).min() >= np.finfo(np.float32).tiny, key


def _fidelity(name: str, engine_name: str, precision: str) -> float:
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines import SessionSpec, get_engine
    from visionbench.models import registry, resolve
    from visionbench.scenarios.fidelity import FidelityCheck
    from visionbench.settings import CALIBRATION_SAMPLES

    spec = resolve(name)
    check = FidelityCheck(spec, None, 0)
    engine = get_engine(engine_name)
    samples = registry.find(name).card.calibration_samples or CALIBRATION_SAMPLES
    calibration = synthetic_calibration(spec, samples)

    def outputs(p: str) -> list[np.ndarray]:
        return check.outputs_of(lambda: engine.prepare(SessionSpec(spec, p, 2, calibration, 1)))

    result = check.compare(outputs("fp32"), outputs(precision), precision)
    assert not result.flags, result
    return result.outputs[0].snr_db


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vit-b16"])
@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_seeded_networks_pass_the_threshold_on_correct_engines(name, engine_name):
    """Zen 4, the check's 8 images: ResNet-50 INT8 23.2 dB OpenVINO, 29.3 ONNX Runtime, BF16
    51.1; ViT-B/16 INT8 31.4 and 24.3, BF16 48.3 (docs/workloads.md)."""
    assert _fidelity(name, engine_name, "int8") >= fidelity.MIN_SNR_DB
    if engine_name == "openvino" and cpu_features().bf16:
        assert _fidelity(name, engine_name, "bf16") >= fidelity.MIN_SNR_DB
