"""Resident memory of this process during one piece of work: what it holds when the work starts,
and its peak during the work alone. On Linux the kernel's own peak (VmHWM) is reset to the
current resident size through ``/proc/self/clear_refs`` (Linux 4.0 and later) and read back after,
so an earlier, larger piece of work cannot leak into a later one's peak; where that interface is
missing or refused, resident memory is sampled instead (every SAMPLE_SECONDS: a peak shorter than
that can be missed, and the figure says so)."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
SAMPLE_SECONDS = 0.01
MIB = 2**20


def rss_mib() -> float:
    """This process's resident memory now."""
    return psutil.Process().memory_info().rss / MIB


def process_peak_mib() -> float:
    """This process's peak resident memory (since it started, or since the last reset)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakMemory:
    """``start()``, the work, then ``stop()`` -> the peak resident MiB during the work."""

    KERNEL = "the kernel's peak (VmHWM), reset through /proc/self/clear_refs before the work"
    SAMPLED = f"resident memory sampled every {SAMPLE_SECONDS * 1000:.0f} ms during the work"

    def __init__(self) -> None:
        self.method = self.KERNEL
        self._peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            CLEAR_REFS.write_text("5")
            process_peak_mib()
            self.method = self.KERNEL
            return
        except OSError:
            self.method = self.SAMPLED
        self._peak = rss_mib()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(SAMPLE_SECONDS):
            self._peak = max(self._peak, process.memory_info().rss / MIB)

    def stop(self) -> float:
        if self._thread is None:
            return process_peak_mib()
        self._stop.set()
        self._thread.join()
        self._thread = None
        return max(self._peak, rss_mib())
