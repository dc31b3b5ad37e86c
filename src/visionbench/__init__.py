"""visionbench: image-classification inference benchmarks at FP32, BF16 and INT8."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionbench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
