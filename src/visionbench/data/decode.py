"""JPEG decoding for the whole pipeline (``--mode pipeline``): bytes in memory to an RGB array
[H, W, 3] uint8, by the fastest decoder installed. The candidates install beside Pillow and all
run libjpeg-turbo: simplejpeg (its own wheel, no system library), PyTurboJPEG (a ctypes wrapper
of the system's libturbojpeg), OpenCV (``opencv-python-headless``); Pillow is the fallback, used
only where none of them is installed, and the record says so. ``benchmarks/decoders.py`` compares
them on the shipped photos; docs/method.md gives its figures and why simplejpeg is first.

The fast decoders do not apply EXIF orientation (Pillow's ``data.images.load_rgb`` does): a
service that receives camera photos may need to; the pipeline decodes as the bytes say."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from visionbench.errors import VisionbenchError

#: The shipped photos (public domain / CC0, from scikit-image's data; photos/README.md).
PHOTOS = Path(__file__).parent / "photos"
#: In order of preference: the fastest first (benchmarks/decoders.py), Pillow last.
DECODERS = ("simplejpeg", "turbojpeg", "opencv", "pillow")
#: Each decoder's distribution, for its version.
DISTRIBUTIONS = {"simplejpeg": "simplejpeg", "turbojpeg": "PyTurboJPEG",
                 "opencv": "opencv-python-headless", "pillow": "pillow"}


@dataclass(frozen=True)
class Decoder:
    name: str
    version: str
    decode: Callable[[bytes], np.ndarray]
    #: Why this is not the first choice (the preferred decoders missing), else "".
    fallback: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def _simplejpeg() -> Callable[[bytes], np.ndarray]:
    import simplejpeg

    return lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB")


def _turbojpeg() -> Callable[[bytes], np.ndarray]:
    import turbojpeg

    jpeg = turbojpeg.TurboJPEG()  # finds the system's libturbojpeg, else raises
    return lambda data: jpeg.decode(data, pixel_format=turbojpeg.TJPF_RGB)


def _opencv() -> Callable[[bytes], np.ndarray]:
    import cv2

    def decode(data: bytes) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("OpenCV could not decode it")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return decode


def _pillow() -> Callable[[bytes], np.ndarray]:
    import io

    from PIL import Image

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    return decode


MAKERS: dict[str, Callable[[], Callable[[bytes], np.ndarray]]] = {
    "simplejpeg": _simplejpeg, "turbojpeg": _turbojpeg, "opencv": _opencv, "pillow": _pillow}


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[name])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@cache
def decoder(name: str) -> Decoder:
    """One decoder by name; a clear error if it is not installed."""
    if name not in MAKERS:
        raise VisionbenchError(f"unknown JPEG decoder '{name}'; choose from {', '.join(DECODERS)}")
    try:
        decode = MAKERS[name]()
    except (ImportError, OSError, RuntimeError) as e:  # not installed, or no system library
        raise VisionbenchError(f"JPEG decoder {name} is not usable here: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__} "
                               f"(pip install {DISTRIBUTIONS[name]})") from e
    return Decoder(name, _version(name), decode)


def installed() -> list[Decoder]:
    """Every usable decoder, in order of preference."""
    out = []
    for name in DECODERS:
        try:
            out.append(decoder(name))
        except VisionbenchError:
            continue
    return out


def best() -> Decoder:
    """The first usable decoder; where it is not the first choice, ``fallback`` says why."""
    found = installed()
    first = found[0]  # Pillow is a core dependency: always there
    if first.name == DECODERS[0]:
        return first
    missing = ", ".join(DECODERS[:DECODERS.index(first.name)])
    return Decoder(first.name, first.version, first.decode,
                   f"{first.name} used because {missing} is not installed or not usable")


def photos() -> list[Path]:
    """The shipped photos, sorted."""
    return sorted(PHOTOS.glob("*.jpg"))


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def read_jpegs(paths: list[Path], dec: Decoder) -> list[bytes]:
    """Each file's bytes, each decoded once to check it: one clear error for a file that is not
    a JPEG or that the decoder cannot read (the pipeline and a served model's JPEG input decode
    JPEG only)."""
    if not paths:
        raise VisionbenchError("no JPEG images given")
    out = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise VisionbenchError(f"cannot read {path}: {e.strerror or e}") from e
        if not is_jpeg(data):
            raise VisionbenchError(f"not a JPEG file: {path} (JPEG is what is decoded here; "
                                   "convert it or leave it out of --data)")
        try:
            image = dec.decode(data)
        except Exception as e:  # whatever a decoder raises, the file is unreadable
            raise VisionbenchError(f"cannot decode {path} with {dec.name}: "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                   ) from e
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VisionbenchError(f"cannot decode {path} with {dec.name}: not an RGB image")
        out.append(data)
    return out
