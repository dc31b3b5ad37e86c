"""What an application does with a model's outputs, outside every timed graph: a classifier's
softmax and top-5, a detector's score threshold and per-class non-maximum suppression, a
segmenter's argmax mask. The whole pipeline (``--mode pipeline``) times them; the fidelity check
matches detections through the same ``detections``.

``detections`` is the per-class greedy suppression of ``reference_detections`` (a loop per class
and per kept box, kept as the reference it is tested against), vectorised: the candidates chosen
by partial selection instead of a full sort, every same-class pair's IoU computed at once, and one
pass over the boxes that overlap a lower-ranked one. It gives the same boxes, classes and scores,
in the same order, to the bit (tests/test_pipeline.py, on random inputs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Same-class pairs computed at once; past it, each class in turn.
MAX_PAIRS = 4_000_000


@dataclass(frozen=True)
class NmsSettings:
    """A detector's post-processing: candidates from ``score_threshold`` (the ``pre_nms_top``
    highest, if given), per-class greedy suppression above ``iou``, the ``max_detections``
    highest kept."""

    score_threshold: float
    iou: float
    pre_nms_top: int | None
    max_detections: int

    def describe(self) -> str:
        top = f", the {self.pre_nms_top} highest" if self.pre_nms_top else ""
        return (f"score >= {self.score_threshold:g}{top}, per-class NMS at IoU > {self.iou:g}, "
                f"at most {self.max_detections} kept")


#: The pipeline's: MLPerf's RetinaNet post-processing (score from 0.05, the 1000 best candidates,
#: at most 300 kept), at IoU 0.5 as benchmarks/detection_postprocess.py times it.
PIPELINE_NMS = NmsSettings(0.05, 0.5, 1000, 300)


def _area(x: np.ndarray) -> np.ndarray:
    return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [n, 4] with every box in ``b`` [m, 4] (x1, y1, x2, y2)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[k]`` with ``b[k]`` for each k: ``iou``'s arithmetic, element by element."""
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 2], b[:, 2])
    y2 = np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _no_detections() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4)), np.zeros(0, int), np.zeros(0)


def reference_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
                         iou_threshold: float, pre_nms_top: int | None, max_detections: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plain algorithm ``detections`` must equal: candidates in row-major order, a stable
    sort by score for the ``pre_nms_top``, then per class a greedy loop (keep the best, drop the
    rest that overlap it above ``iou_threshold``), then the ``max_detections`` highest."""
    kept_boxes, kept_cls, kept_scores = [], [], []
    anchors, classes = np.nonzero(scores >= score_threshold)
    if pre_nms_top is not None and anchors.size > pre_nms_top:
        top = np.argsort(-scores[anchors, classes], kind="stable")[:pre_nms_top]
        anchors, classes = anchors[top], classes[top]
    for c in np.unique(classes):
        idx = anchors[classes == c]
        s = scores[idx, c]
        order = idx[np.argsort(-s, kind="stable")]
        while order.size:
            best = order[0]
            kept_boxes.append(boxes[best])
            kept_cls.append(c)
            kept_scores.append(scores[best, c])
            rest = order[1:]
            order = rest[iou(boxes[best][None], boxes[rest])[0] <= iou_threshold]
    if not kept_boxes:
        return _no_detections()
    top = np.argsort(-np.asarray(kept_scores), kind="stable")[:max_detections]
    return np.asarray(kept_boxes)[top], np.asarray(kept_cls)[top], np.asarray(kept_scores)[top]


def candidates(scores: np.ndarray, score_threshold: float, pre_nms_top: int | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The (anchor, class) pairs that reach suppression: scores from the threshold, the
    ``pre_nms_top`` highest (ties to the earlier in row-major order, as a stable sort gives)."""
    flat = np.flatnonzero(scores >= score_threshold)
    if pre_nms_top is not None and flat.size > pre_nms_top:
        s = scores.ravel()[flat]
        kth = np.partition(s, flat.size - pre_nms_top)[flat.size - pre_nms_top]
        above = np.flatnonzero(s > kth)
        tied = np.flatnonzero(s == kth)[:pre_nms_top - above.size]
        flat = flat[np.sort(np.concatenate([above, tied]))]
    return np.divmod(flat, scores.shape[1])


def _suppressed(boxes: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy suppression of boxes sorted by class, then best first: which are dropped."""
    n = len(boxes)
    removed = np.zeros(n, bool)
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    ends = np.r_[starts[1:], n]
    later = np.repeat(ends, ends - starts) - np.arange(n) - 1  # same-class boxes after each
    if later.sum() > MAX_PAIRS:  # one class at a time
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s > 1:
                removed[s:e] = (_suppressed(boxes[s:e], classes[s:e], iou_threshold)
                                if (e - s) * (e - s - 1) // 2 <= MAX_PAIRS
                                else _greedy(boxes[s:e], iou_threshold))
        return removed
    first = np.repeat(np.arange(n), later)
    second = first + 1 + np.arange(first.size) - np.repeat(np.cumsum(later) - later, later)
    over = pair_iou(boxes[first], boxes[second]) > iou_threshold
    first, second = first[over], second[over]
    if not first.size:
        return removed
    heads = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    for i, s, e in zip(first[heads].tolist(), heads.tolist(), np.r_[heads[1:], first.size].tolist(),
                       strict=True):
        if not removed[i]:  # every box that could drop it came before it: its fate is settled
            removed[second[s:e]] = True
    return removed


def _greedy(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """One class's greedy loop (best first), for a class too large for its pairs at once."""
    removed = np.ones(len(boxes), bool)
    order = np.arange(len(boxes))
    while order.size:
        removed[order[0]] = False
        rest = order[1:]
        order = rest[iou(boxes[order[0]][None], boxes[rest])[0] <= iou_threshold]
    return removed


def detect(boxes: np.ndarray, scores: np.ndarray, nms: NmsSettings
           ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], int]:
    """``detections`` under ``nms``, and how many candidates reached suppression."""
    anchors, classes = candidates(scores, nms.score_threshold, nms.pre_nms_top)
    if not anchors.size:
        return _no_detections(), 0
    s = scores[anchors, classes]
    order = np.lexsort((anchors, -s, classes))  # by class, then best first, then anchor
    anchors, classes, s = anchors[order], classes[order], s[order]
    keep = ~_suppressed(boxes[anchors], classes, nms.iou)
    reached = len(keep)
    anchors, classes, s = anchors[keep], classes[keep], s[keep]
    top = np.argsort(-s, kind="stable")[:nms.max_detections]
    return (boxes[anchors[top]], classes[top], s[top]), reached


def detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
               iou_threshold: float, pre_nms_top: int | None, max_detections: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's boxes [A, 4] and class scores [A, classes] -> kept boxes, classes, scores,
    highest first: ``reference_detections``' result, vectorised."""
    return detect(boxes, scores, NmsSettings(score_threshold, iou_threshold, pre_nms_top,
                                             max_detections))[0]


def top5(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's logits [N, classes] -> the five likeliest classes [N, 5] (likeliest
    first) and their softmax probabilities."""
    z = logits.astype(np.float32, copy=False)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    k = min(5, p.shape[1])
    idx = np.argpartition(-p, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(p, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


def mask(class_maps: np.ndarray) -> np.ndarray:
    """A segmenter's class maps [N, classes, H, W] -> its mask [N, H, W] (the likeliest class
    of each pixel), as uint8 where the classes fit."""
    out = class_maps.argmax(axis=1)
    return out.astype(np.uint8) if class_maps.shape[1] <= 256 else out


def for_task(task: str, nms: NmsSettings = PIPELINE_NMS) -> tuple[Callable[[list[np.ndarray]], Any], str]:
    """What the pipeline does with a batch's outputs for ``task``, and its description. A
    detector's answer per image is (kept boxes, candidates that reached suppression); it needs
    the boxes [N, A, 4] and scores [N, A, classes] as its first two outputs."""
    if task == "classification":
        return (lambda outs: top5(outs[0])), "softmax and top-5"
    if task == "segmentation":
        return (lambda outs: mask(outs[0])), "argmax over the classes to a mask"
    if task == "detection":
        def post(outs: list[np.ndarray]) -> list[tuple[int, int]]:
            if len(outs) < 2 or outs[0].ndim != 3 or outs[1].ndim != 3:
                raise NotImplementedError(
                    "the detector's post-processing needs its boxes [N, A, 4] and scores [N, A, "
                    f"classes]; the engine gave {len(outs)} output(s) of shapes "
                    f"{', '.join(str(o.shape) for o in outs)}")
            out = []
            for b, sc in zip(outs[0], outs[1], strict=True):
                (kept, _, _), reached = detect(b, sc, nms)
                out.append((len(kept), reached))
            return out
        return post, f"vectorised numpy: {nms.describe()}"
    return (lambda outs: None), "none (the model's task is not known)"
