"""The detectors' post-processing, which no timed graph contains: score threshold, per-class
non-maximum suppression and the cap on detections, in numpy, timed on the FP32 outputs of one
image, beside the same model's batch-1 inference on OpenVINO: the plain per-class greedy loop
(``visionbench.data.postprocess.reference_detections``, what the fidelity check ran before) and
the vectorised one that gives the same boxes (``postprocess.detections``, what the fidelity check
and ``--mode pipeline`` run), in alternating rounds on the same input. Two settings: MLPerf
RetinaNet's (score from 0.05, the 1000 best candidates, at most 300 kept; MLPerf takes the 1000
best per pyramid level) and a lighter one (score from 0.3, the 100 best, at most 100 kept).

With seeded weights the scores are not a trained detector's: the candidate counts printed say how
much work each setting had; a trained detector on a real photo passes far fewer boxes.

    python benchmarks/detection_postprocess.py [--repeats 20] [--workloads ssd-mobilenet,retinanet]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from visionbench.data import postprocess
from visionbench.data.calibration import synthetic_calibration
from visionbench.data.synthetic import input_pool
from visionbench.engines import SessionSpec, get_engine
from visionbench.models import resolve

from _common import median, spread

SETTINGS = {
    "MLPerf RetinaNet (score >= 0.05, best 1000, keep 300; --mode pipeline's)": dict(
        score_threshold=0.05, iou_threshold=0.5, pre_nms_top=1000, max_detections=300),
    "score >= 0.3, best 100, keep 100": dict(score_threshold=0.3, iou_threshold=0.5, pre_nms_top=100,
                                             max_detections=100),
}


def ms(f, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--workloads", default="ssd-mobilenet,retinanet")
    a = ap.parse_args()
    for name in a.workloads.split(","):
        spec = resolve(name)
        session = get_engine("openvino").prepare(SessionSpec(spec, "fp32", 2,
                                                             synthetic_calibration(spec, 2), 1))
        x = input_pool(spec, 1, seed=0, pool=1)[0]
        try:
            boxes, scores = session.outputs(x)
            infer = ms(lambda: session.outputs(x), a.repeats)  # noqa: B023
        finally:
            session.close()
        print(f"{name}: {boxes.shape[1]} anchors x {scores.shape[2]} classes; batch-1 FP32 "
              f"inference on OpenVINO {spread(infer)} ms (median [min-max] of {a.repeats})")
        for label, kw in SETTINGS.items():
            candidates = int((scores[0] >= kw["score_threshold"]).sum())
            loop = postprocess.reference_detections(boxes[0], scores[0], **kw)
            fast = postprocess.detections(boxes[0], scores[0], **kw)
            same = all(np.array_equal(x, y) for x, y in zip(loop, fast, strict=True))
            times: dict[str, list[float]] = {"loop": [], "vectorised": []}
            for _ in range(a.repeats):  # alternating, one call each
                for name, f in (("loop", postprocess.reference_detections),
                                ("vectorised", postprocess.detections)):
                    times[name] += ms(lambda: f(boxes[0], scores[0], **kw), 1)  # noqa: B023
            print(f"  {label}: {candidates} candidates over the threshold, {len(fast[0])} kept "
                  f"({'the same boxes' if same else 'DIFFERENT boxes'} both ways)")
            for name, t in times.items():
                print(f"    {name:10s} {spread(t)} ms, {median(t) / median(infer):.2f}x the inference")
            print(f"    vectorised / loop: {median(times['vectorised']) / median(times['loop']):.3f}")
        print(f"  scores: mean {np.mean(scores):.3f}, share >= 0.05 {np.mean(scores >= 0.05):.3f}")


if __name__ == "__main__":
    main()
