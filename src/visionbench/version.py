"""visionbench's version: a leaf module, importing nothing of visionbench."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionbench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"
