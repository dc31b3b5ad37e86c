"""Fidelity of a lower precision to FP32 on the same inputs, with no labels: numerically for every
output tensor (relative error, signal-to-noise ratio in dB), and by task where the outputs mean
something (classification: top-1 agreement and top-5 overlap; detection: FP32's boxes found
again at IoU >= 0.5 with the same class, their mean IoU and score error; segmentation: pixel
agreement and mean IoU of the argmax masks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visionbench.data import postprocess
from visionbench.data.postprocess import iou

#: Flags, as the method section states them. Classification: MLPerf's accuracy rule asks 99% of
#: FP32's accuracy; agreement of 99% with FP32's top-1 is the label-free counterpart.
MIN_TOP1_AGREEMENT = 0.99
#: Detection: FP32's boxes found again (IoU >= 0.5, same class).
MIN_BOXES_KEPT = 0.95
#: Segmentation: pixels given FP32's class.
MIN_PIXEL_AGREEMENT = 0.98
#: Every output tensor: 20 dB is an error of 10% of the signal (root mean square).
MIN_SNR_DB = 20.0
#: A depthwise network's INT8 (its card's ``int8_min_snr_db``): the trained EfficientNet-Lite0
#: itself reads 12.7-19.0 dB on the check's synthetic images and 18 dB on real photos at INT8 on
#: OpenVINO and ONNX Runtime (docs/workloads.md); an INT8 with every range wrong reads about 0.
DEPTHWISE_INT8_MIN_SNR_DB = 12.0
#: Detection post-processing for matching (outside every timed graph): a box counts from this
#: score, and boxes of one class overlapping more than NMS_IOU are suppressed.
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.5
MATCH_IOU = 0.5
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class Numeric:
    """One output tensor against FP32's."""

    output: str
    rel_error: float
    snr_db: float


def numeric(name: str, ref: np.ndarray, out: np.ndarray) -> Numeric:
    """Relative error ||out - ref|| / ||ref|| and SNR = 10 log10(||ref||^2 / ||out - ref||^2)."""
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    signal = float(np.sum(ref64**2))
    noise = float(np.sum((out64 - ref64) ** 2))
    rel = float(np.sqrt(noise / signal)) if signal > 0 else float("inf") if noise > 0 else 0.0
    if noise == 0:
        snr = float("inf")
    elif signal == 0:
        snr = float("-inf")
    else:
        snr = 10 * float(np.log10(signal / noise))
    return Numeric(name, rel, snr)


def classification(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean top-5 overlap (shared classes / 5) of logits [N, classes]."""
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1)[:, :k]
    top_out = np.argsort(-out, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)]
    return {"top1_agreement": float(np.mean(top_ref[:, 0] == top_out[:, 0])),
            "top5_overlap": float(np.mean(overlap))}


def detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = SCORE_THRESHOLD,
               pre_nms_top: int | None = None, max_detections: int = MAX_DETECTIONS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's boxes [A, 4] and class scores [A, classes] -> kept boxes, classes, scores:
    scores from ``score_threshold`` (the ``pre_nms_top`` highest of them, if given), then per class
    greedy non-maximum suppression at NMS_IOU, then the ``max_detections`` highest
    (``data.postprocess.detections``, the pipeline's)."""
    return postprocess.detections(boxes, scores, score_threshold, NMS_IOU, pre_nms_top,
                                  max_detections)


def detection(ref: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, np.ndarray]
              ) -> dict[str, float | None]:
    """FP32's detections matched greedily (highest IoU first, same class, IoU >= MATCH_IOU) by
    the lower precision's: the share kept, their mean IoU and mean absolute score error."""
    found = total = 0
    ious: list[float] = []
    errs: list[float] = []
    for i in range(ref[0].shape[0]):
        rb, rc, rs = detections(ref[0][i], ref[1][i])
        ob, oc, os_ = detections(out[0][i], out[1][i])
        total += len(rb)
        if not len(rb) or not len(ob):
            continue
        m = iou(rb, ob) * (rc[:, None] == oc[None, :])
        while m.size and m.max() >= MATCH_IOU:
            r, o = np.unravel_index(int(np.argmax(m)), m.shape)
            found += 1
            ious.append(float(m[r, o]))
            errs.append(abs(float(rs[r]) - float(os_[o])))
            m[r, :] = -1
            m[:, o] = -1
    return {"boxes_kept": found / total if total else None, "reference_boxes": float(total),
            "mean_iou": float(np.mean(ious)) if ious else None,
            "score_error": float(np.mean(errs)) if errs else None}


def segmentation(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Pixel agreement and mean IoU (over the classes either mask has) of argmax masks of class
    maps [N, classes, H, W]."""
    a, b = ref.argmax(axis=1), out.argmax(axis=1)
    ious = []
    for c in np.union1d(np.unique(a), np.unique(b)):
        inter = np.sum((a == c) & (b == c))
        union = np.sum((a == c) | (b == c))
        ious.append(inter / union)
    return {"pixel_agreement": float(np.mean(a == b)), "mean_iou": float(np.mean(ious))}
