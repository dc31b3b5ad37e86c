"""LoadGen's query sample library: samples made on demand, loaded and unloaded as LoadGen asks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SampleLibrary:
    """LoadGen's query sample library: ``count`` samples, of which LoadGen loads a working set."""

    def __init__(self, count: int, make: Callable[[int], np.ndarray]) -> None:
        self.count = count
        self.make = make
        self.loaded: dict[int, np.ndarray] = {}

    def load(self, indices: list[int]) -> None:
        for i in indices:
            self.loaded[i] = self.make(i)

    def unload(self, indices: list[int]) -> None:
        for i in indices:
            self.loaded.pop(i, None)
