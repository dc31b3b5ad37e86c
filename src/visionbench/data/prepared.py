"""A data set decoded and preprocessed once, before any engine runs, into a temporary array on
disk (a 50,000-image set does not fit in memory twice); that time is reported apart from inference."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.data.images import Dataset, decoded
from visionbench.data.preprocess import get_preprocess, preprocess
from visionbench.errors import VisionbenchError
from visionbench.models.spec import ModelSpec


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


def image_array(model: ModelSpec, image: Any) -> np.ndarray:
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
        arrays[n] = image_array(model, image)
        labels.append(label)
        paths.append(path)
        n += 1
    if n == 0:
        workdir.cleanup()
        raise VisionbenchError(f"none of the {len(dataset.items)} images in {dataset.root} could be read")
    return Prepared(arrays[:n], np.asarray(labels) if dataset.labelled else None, paths,
                    time.perf_counter() - t0, workdir)
