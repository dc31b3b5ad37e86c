"""The ImageNet-1k (ILSVRC2012) class index: position, WordNet id and names of each class."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str


@lru_cache(maxsize=1)
def classes() -> tuple[ImageNetClass, ...]:
    text = files("visionbench.data").joinpath("imagenet_classes.tsv").read_text()
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            index, wnid, name = line.split("\t")
            out.append(ImageNetClass(int(index), wnid, name))
    return tuple(out)


@lru_cache(maxsize=1)
def by_wnid() -> dict[str, ImageNetClass]:
    return {c.wnid: c for c in classes()}
