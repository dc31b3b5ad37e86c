"""INT8 calibration samples: the user's images or list file, a fixed-seed sample of the data set,
or seeded synthetic tensors; each named by a key under which engines cache quantized models."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.data.images import Dataset, image_files, load_rgb, read_list_file
from visionbench.data.prepared import image_array
from visionbench.data.synthetic import model_images
from visionbench.errors import VisionbenchError
from visionbench.models.spec import ModelSpec

CALIBRATION_SEED = 1234


@dataclass(frozen=True)
class Calibration:
    """INT8 calibration samples; ``key`` names them for caching quantized models."""

    key: str
    count: int
    samples: Callable[[], Iterator[np.ndarray]]  # single-image batches

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.samples())


def synthetic_calibration(model: ModelSpec, count: int, seed: int = CALIBRATION_SEED) -> Calibration:
    """``count`` single-image synthetic images with content (``data.synthetic.images``), the
    same on each pass."""

    def samples() -> Iterator[np.ndarray]:
        for i in range(count):
            yield model_images(model, 1, seed + i)

    return Calibration(key=f"synthetic-images-s{seed}-n{count}", count=count, samples=samples)


def calibration(model: ModelSpec, count: int, source: Path | None, dataset: Dataset | None,
                evaluated: set[Path]) -> tuple[Calibration, dict[str, Any]]:
    """INT8 calibration samples and what they are: the user's calibration images or list, else a
    fixed-seed sample of the data set (kept apart from the evaluated images where it is large
    enough), else synthetic images (enough to time INT8, says nothing of its accuracy)."""
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
        return cal, {"source": "synthetic", "count": count, "how": "seeded synthetic images (smooth "
                     "random fields, each its own colour and contrast); enough to time INT8 and "
                     "judge its fidelity to FP32, not its accuracy"}
    if not paths:
        raise VisionbenchError("no calibration images")
    digest = hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()[:12]

    def samples() -> Iterator[np.ndarray]:
        for p in paths:
            try:
                yield image_array(model, load_rgb(p))[None]
            except Exception:  # an unreadable image (whatever its decoder raised) calibrates nothing
                continue

    cal = Calibration(key=f"images-{model.preprocessing}-{digest}-n{len(paths)}", count=len(paths),
                      samples=samples)
    return cal, {"source": "images", "count": len(paths), "how": how,
                 "preprocessing": model.preprocessing}
