"""Synthetic inputs, as in the reference scripts: random normal data (never all zeros), made
before any timing starts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from visionbench.engines.base import Calibration
from visionbench.models.spec import ModelSpec

#: Distinct input batches each measurement cycles through, so no engine can cache one answer.
POOL_SIZE = 4
CALIBRATION_SEED = 1234


def input_pool(model: ModelSpec, batch_size: int, seed: int, pool: int = POOL_SIZE) -> list[np.ndarray]:
    """A few distinct standard-normal float32 batches of the model's input shape."""
    rng = np.random.default_rng(seed)
    shape = model.input_shape(batch_size)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(pool)]


def synthetic_calibration(model: ModelSpec, count: int, seed: int = CALIBRATION_SEED) -> Calibration:
    """``count`` single-image standard-normal samples, regenerated identically on each pass."""

    def samples() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield rng.standard_normal(model.input_shape(1), dtype=np.float32)

    return Calibration(key=f"synthetic-normal-s{seed}-n{count}", count=count, samples=samples)
