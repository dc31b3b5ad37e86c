"""Capture what native code writes to stdout or stderr, below Python's own streams."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def capture_fd(fd: int) -> Iterator[list[str]]:
    """Capture what C code writes to a file descriptor (1 or 2): an engine does not print, but
    native libraries do (oneDNN's verbose log, torchao's and LiteRT's start-up messages)."""

    libc = ctypes.CDLL(None)
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        libc.fflush(None)
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield lines
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            libc.fflush(None)
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())
