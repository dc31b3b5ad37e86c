"""What makes seeded weights behave as trained ones where precision is concerned.

- Residual branches start scaled down (``RESIDUAL_SCALE``), as Fixup and SkipInit start residual
  networks and CaiT's LayerScale starts transformers: a block begins near the identity, so
  rounding is not amplified from block to block, as it is in a random network of full-scale
  branches and is not in a trained one.
- The classifier reads the few directions in which its input features differ from image to image
  (``principal_classifier``). A random classifier reads every feature direction alike, so the
  rounding noise of a lower precision, spread over all of them, reaches the logits as strongly as
  what differs between images does; a trained one reads the directions that separate classes and
  loses the noise in the rest.

Measured in docs/workloads.md ("Fidelity of seeded networks")."""

from __future__ import annotations

import numpy as np

#: The scale of each residual branch's output at initialisation.
RESIDUAL_SCALE = 0.1
#: Principal directions of the features a seeded classifier reads (at most images - 1).
DIRECTIONS = 16
#: Images the features are taken over (and, for networks with batch norms, their statistics).
IMAGES = 32


def principal_classifier(
    features: np.ndarray, num_classes: int, rng: np.random.Generator, directions: int = DIRECTIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Weight [classes, features] and bias of a linear classifier over ``features`` [images,
    features]: each logit a random mix of the features' projections on their leading principal
    directions over these images, centred on their mean; the logits' variance over the images is
    1 on average over the classes. The directions are not whitened: those that differ most
    between images weigh most, and a weak direction, where rounding noise can outweigh the
    signal, is not amplified."""
    f = features.astype(np.float64).reshape(len(features), -1)
    mean = f.mean(axis=0)
    _, s, vt = np.linalg.svd(f - mean, full_matrices=False)
    k = int(min(directions, np.count_nonzero(s > 1e-6 * s[0])))  # none the images lack
    spread = np.sqrt(np.sum(s[:k] ** 2) / len(f))
    weight = rng.standard_normal((num_classes, k)) @ vt[:k] / spread
    return weight.astype(np.float32), (-(weight @ mean)).astype(np.float32)
