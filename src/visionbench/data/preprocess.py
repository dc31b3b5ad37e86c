"""Image preprocessing as each model family was trained with it, declared per model and applied
before any timing: resize the shorter side, centre-crop, scale, normalise, lay out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from visionbench.errors import VisionbenchError


@dataclass(frozen=True)
class Preprocess:
    name: str
    description: str
    resize_shorter: int  # the shorter side is resized to this, keeping the aspect ratio
    crop: int  # then the centre crop x crop is taken
    mean: tuple[float, float, float]  # subtracted, in 0-255 units, RGB
    std: tuple[float, float, float]  # divided by, in 0-255 units (1 = mean subtraction only)
    interpolation: Image.Resampling = Image.Resampling.BILINEAR


PREPROCESSING: dict[str, Preprocess] = {
    p.name: p for p in (
        Preprocess("torchvision", "torchvision: shorter side 256, centre crop 224, ImageNet mean/std",
                   256, 224, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
        Preprocess("mlperf", "MLPerf/TensorFlow: shorter side 224/0.875 = 256, centre crop 224, mean "
                   "subtraction only", 256, 224, (123.68, 116.78, 103.94), (1.0, 1.0, 1.0)),
        Preprocess("efficientnet-lite", "EfficientNet-Lite: shorter side 256, centre crop 224, "
                   "(x - 127) / 128", 256, 224, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    )
}


def get_preprocess(name: str) -> Preprocess:
    if name not in PREPROCESSING:
        raise VisionbenchError(f"unknown preprocessing '{name}'; choose from {', '.join(PREPROCESSING)}")
    return PREPROCESSING[name]


def resized(image: Image.Image, p: Preprocess, size: int) -> np.ndarray:
    """One RGB image resized, centre-cropped to ``size``x``size`` and normalised: float32
    [H, W, C], the layout a decoder gives (the resize keeps the preprocessing's crop ratio)."""
    resize = round(p.resize_shorter * size / p.crop)
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), p.interpolation)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    mean, std = np.asarray(p.mean, np.float32), np.asarray(p.std, np.float32)
    return (np.asarray(image, dtype=np.float32) - mean) / std


def laid_out(x: np.ndarray, layout: str) -> np.ndarray:
    """[..., H, W, C] images in the model's layout, contiguous: NCHW transposed, NHWC as they are."""
    return np.ascontiguousarray(np.moveaxis(x, -1, -3) if layout == "NCHW" else x)


def preprocess(image: Image.Image, p: Preprocess, size: int, layout: str) -> np.ndarray:
    """One RGB image as a float32 [C, H, W] (NCHW) or [H, W, C] (NHWC) array of ``size``x``size``
    (the model's input; the resize keeps the preprocessing's crop ratio)."""
    return laid_out(resized(image, p, size), layout)
