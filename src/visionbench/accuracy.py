"""Accuracy at every precision, on real images: top-1 and top-5 against the labels, each
precision's top-1 agreement with the same engine's FP32, and MLPerf's rule (a lower precision
keeps at least 99% of FP32's top-1). Also where INT8 calibration data comes from.

Images are decoded and preprocessed once, before any engine runs, into a temporary array on disk
(a 50,000-image set does not fit in memory twice); that time is reported apart from inference.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.data.images import Dataset, decoded, image_files, load_rgb, read_list_file
from visionbench.data.preprocess import get_preprocess, preprocess
from visionbench.data.synthetic import synthetic_calibration
from visionbench.engines.base import Calibration
from visionbench.errors import VisionbenchError
from visionbench.models.spec import ModelSpec

MLPERF_RATIO = 0.99
CALIBRATION_SEED = 1234


@dataclass
class Prepared:
    """A data set decoded and preprocessed: arrays in the model's layout, labels, timings."""

    arrays: np.ndarray  # memory-mapped [N, ...]
    labels: np.ndarray | None  # ImageNet class index per image, or None when unlabelled
    paths: list[Path]
    seconds: float
    workdir: tempfile.TemporaryDirectory

    def close(self) -> None:
        self.workdir.cleanup()


def _image_array(model: ModelSpec, image: Any) -> np.ndarray:
    return preprocess(image, get_preprocess(model.preprocessing), model.height, model.layout)


def prepare_images(model: ModelSpec, dataset: Dataset) -> Prepared:
    if model.channels != 3 or model.height != model.width:
        raise VisionbenchError(
            f"accuracy needs a square RGB input; {model.name} takes {model.input_shape(1)[1:]}"
        )
    t0 = time.perf_counter()
    workdir = tempfile.TemporaryDirectory(prefix="visionbench-images-")
    shape = model.input_shape(len(dataset.items))
    arrays = np.lib.format.open_memmap(Path(workdir.name) / "images.npy", "w+", np.float32, shape)
    labels, paths = [], []
    n = 0
    for path, image, label in decoded(dataset):
        arrays[n] = _image_array(model, image)
        labels.append(label)
        paths.append(path)
        n += 1
    if n == 0:
        workdir.cleanup()
        raise VisionbenchError(f"none of the {len(dataset.items)} images in {dataset.root} could be read")
    return Prepared(arrays[:n], np.asarray(labels) if dataset.labelled else None, paths,
                    time.perf_counter() - t0, workdir)


def calibration(model: ModelSpec, count: int, source: Path | None, dataset: Dataset | None,
                evaluated: set[Path]) -> tuple[Calibration, dict[str, Any]]:
    """INT8 calibration samples and what they are: the user's calibration images or list, else a
    fixed-seed sample of the data set (kept apart from the evaluated images where it is large
    enough), else synthetic noise (enough to time INT8, says nothing of its accuracy)."""
    if source is not None:
        if source.is_dir():
            paths = image_files(source, recursive=True)[:count]
            how = f"the first {len(paths)} images of {source}"
        elif source.is_file():
            paths = read_list_file(source)[:count]
            how = f"the first {len(paths)} files listed in {source.name}"
        else:
            raise VisionbenchError(f"calibration data not found: {source}")
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise VisionbenchError(f"calibration image not found: {missing[0]}")
    elif dataset is not None:
        paths = dataset.sample(count, CALIBRATION_SEED, exclude=evaluated)
        overlap = len(set(paths) & evaluated)
        how = (f"{len(paths)} images drawn (seed {CALIBRATION_SEED}) from the data set, "
               + ("disjoint from the evaluated images" if not overlap else
                  f"{overlap} of them also evaluated (the set is too small to keep them apart)"))
    else:
        cal = synthetic_calibration(model, count)
        return cal, {"source": "synthetic", "count": count, "how": "seeded standard-normal tensors; "
                     "enough to time INT8, not to judge its accuracy"}
    if not paths:
        raise VisionbenchError("no calibration images")
    digest = hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()[:12]

    def samples() -> Iterator[np.ndarray]:
        for p in paths:
            try:
                yield _image_array(model, load_rgb(p))[None]
            except (OSError, ValueError):  # an unreadable image calibrates nothing
                continue

    cal = Calibration(key=f"images-{model.preprocessing}-{digest}-n{len(paths)}", count=len(paths),
                      samples=samples)
    return cal, {"source": "images", "count": len(paths), "how": how,
                 "preprocessing": model.preprocessing}


def top5(logits: np.ndarray, label_offset: int) -> np.ndarray:
    """The five highest classes per row, as ImageNet indices (a background class removed)."""
    order = np.argsort(-logits, axis=1)[:, :5]
    return order - label_offset


def scores(pred: np.ndarray, labels: np.ndarray | None, fp32_top1: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"top1": None, "top5": None, "agreement_with_fp32": None}
    if labels is not None:
        out["top1"] = float((pred[:, 0] == labels).mean())
        out["top5"] = float((pred == labels[:, None]).any(axis=1).mean())
    if fp32_top1 is not None:
        out["agreement_with_fp32"] = float((pred[:, 0] == fp32_top1).mean())
    return out


def mlperf_rule(top1: float | None, fp32_top1: float | None) -> str | None:
    if top1 is None or fp32_top1 is None:
        return None
    return "pass" if top1 >= MLPERF_RATIO * fp32_top1 else "fail"


def write_predictions(directory: Path, name: str, paths: list[Path], pred: np.ndarray) -> str:
    from visionbench.fsutil import atomic_write_text

    rel = f"raw/accuracy-{name}.json"
    atomic_write_text(directory / rel, json.dumps(
        {"top5": {str(p): [int(c) for c in row] for p, row in zip(paths, pred, strict=True)}}))
    return rel
