"""Synthetic inputs. Timing: random normal data, as in the reference scripts (never all zeros),
made before any timing starts. Wherever the values matter (a seeded network's batch-norm
statistics, INT8 calibration without images, the fidelity check's inputs): images with content,
smooth random fields at several scales, each image its own colour, brightness and contrast. White
noise has no content: any statistic averaged over an image (what global pooling computes) is
nearly the same for every noise image, so a network's outputs differ from one noise image to the
next by little more than rounding, and every lower precision looked broken."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the seeded models import ``images`` while the models package loads
    from visionbench.models.spec import ModelSpec

#: Distinct input batches each measurement cycles through, so no engine can cache one answer.
POOL_SIZE = 4
#: Cells per side of the random fields summed into a synthetic image (coarse to fine).
SCALES = (2, 4, 8, 16, 32)



def input_pool(model: ModelSpec, batch_size: int, seed: int, pool: int = POOL_SIZE) -> list[np.ndarray]:
    """A few distinct standard-normal float32 batches of the model's input shape."""
    rng = np.random.default_rng(seed)
    shape = model.input_shape(batch_size)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(pool)]


def images(count: int, channels: int, height: int, width: int, seed: int) -> np.ndarray:
    """``count`` NCHW float32 images with content (mean near 0, standard deviation near 1, as a
    normalised photo): per channel, a sum of random fields of ``SCALES`` cells, each field's
    weight and the image's contrast and colour offset drawn per image."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, channels, height, width))
    for cells in SCALES:
        grid = rng.standard_normal((count, channels, cells, cells))
        up = grid.repeat(-(-height // cells), axis=2).repeat(-(-width // cells), axis=3)
        weight = rng.uniform(0.2, 1.0, (count, 1, 1, 1)) / np.sqrt(cells)
        out += up[:, :, :height, :width] * weight
    out *= rng.uniform(0.5, 2.0, (count, 1, 1, 1))
    out += rng.normal(0.0, 0.5, (count, channels, 1, 1))
    return (out / out.std()).astype(np.float32)


def model_images(model: ModelSpec, count: int, seed: int) -> np.ndarray:
    """``images`` in the model's input layout."""
    x = images(count, model.channels, model.height, model.width, seed)
    return x if model.layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
