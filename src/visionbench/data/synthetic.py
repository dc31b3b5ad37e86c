"""Synthetic inputs, as in the reference scripts: random normal data (never all zeros), made
before any timing starts."""

from __future__ import annotations

import numpy as np

from visionbench.models.spec import ModelSpec

#: Distinct input batches each measurement cycles through, so no engine can cache one answer.
POOL_SIZE = 4


def input_pool(model: ModelSpec, batch_size: int, seed: int, pool: int = POOL_SIZE) -> list[np.ndarray]:
    """A few distinct standard-normal float32 batches of the model's input shape."""
    rng = np.random.default_rng(seed)
    shape = model.input_shape(batch_size)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(pool)]
