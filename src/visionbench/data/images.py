"""Image data sets in the ImageNet validation layouts, decoded with Pillow.

Two layouts: class sub-folders named by WordNet id (``n01440764/xxx.JPEG``), or a flat folder
with a labels file of ``filename label`` lines (ILSVRC2012's / MLPerf's ``val_map.txt``, found
in the folder when not given). A folder of images without labels serves calibration only.
Unreadable or truncated files are skipped and counted, never fatal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from visionbench.data.imagenet import by_wnid
from visionbench.errors import VisionbenchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
LABEL_FILES = ("val_map.txt", "labels.txt")


@dataclass
class Dataset:
    root: Path
    layout: str  # "class folders", "labels file <name>" or "unlabelled"
    items: list[tuple[Path, int | None]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # filled while decoding

    @property
    def labelled(self) -> bool:
        return bool(self.items) and all(label is not None for _, label in self.items)

    def sample(self, n: int, seed: int, exclude: set[Path] | None = None) -> list[Path]:
        """``n`` files drawn with a fixed seed, avoiding ``exclude`` while others remain."""
        paths = [p for p, _ in self.items]
        fresh = [p for p in paths if p not in (exclude or set())]
        pool = fresh if len(fresh) >= n else paths
        return random.Random(seed).sample(pool, min(n, len(pool)))


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (and below it, if ``recursive``), sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _labels_file(root: Path, labels: Path) -> list[tuple[Path, int | None]]:
    items = []
    try:
        lines = labels.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VisionbenchError(f"cannot read the labels file {labels}: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise VisionbenchError(f"{labels}:{n}: expected 'filename label', got {line.strip()!r}")
        items.append((root / parts[0], int(parts[1])))
    return items


def open_dataset(root: Path, labels: Path | None = None, limit: int | None = None) -> Dataset:
    """The images under ``root`` with their labels (class indices), first ``limit`` in order."""
    if not root.is_dir():
        raise VisionbenchError(f"data directory not found: {root}")
    if labels is None:
        labels = next((root / n for n in LABEL_FILES if (root / n).is_file()), None)
    if labels is not None:
        items, layout = _labels_file(root, labels), f"labels file {labels.name}"
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        wnids = by_wnid()
        if folders:
            unknown = [f.name for f in folders if f.name not in wnids]
            if unknown:
                raise VisionbenchError(
                    f"{root}: class folders must be named by ImageNet WordNet id (e.g. n01440764); "
                    f"not one: {unknown[0]}"
                )
            items = [(p, wnids[f.name].index) for f in folders for p in image_files(f)]
            layout = "class folders"
        else:
            items, layout = [(p, None) for p in image_files(root)], "unlabelled"
    if not items:
        raise VisionbenchError(f"no images found in {root}")
    if limit is not None:
        items = items[:limit]
    return Dataset(root, layout, items)


def load_rgb(path: Path) -> Image.Image:
    """An image upright (EXIF orientation applied) in RGB, whatever its mode (L, P, CMYK, RGBA...).
    Raises OSError or ValueError for an unreadable or truncated file."""
    with Image.open(path) as im:
        im.load()  # decodes fully: a truncated file fails here, not later
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # Transparent pixels over white, as a viewer shows them (not over black).
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")


def decoded(dataset: Dataset) -> Iterator[tuple[Path, Image.Image, int | None]]:
    """Decoded images; files that fail are recorded in ``dataset.skipped`` and passed over."""
    for path, label in dataset.items:
        try:
            yield path, load_rgb(path), label
        except Exception as e:  # whatever a decoder raises, the image is unreadable: skip it
            dataset.skipped.append((path, f"{type(e).__name__}: {e}"))


def read_list_file(path: Path) -> list[Path]:
    """MLPerf's calibration list (``cal_image_list_option_1.txt``): one file name per line,
    relative to the list's folder (or absolute)."""
    try:
        names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise VisionbenchError(f"cannot read the image list {path}: {e}") from e
    return [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]
