"""This machine's peak arithmetic rate per precision and its memory bandwidth, measured once and
cached: FP32 fused multiply-add, BF16 dot product (AVX512_BF16) and INT8 dot product
(AVX512_VNNI, AVX-VNNI, or AVX2's vpmaddubsw where there is no VNNI), and STREAM's triad over
arrays far larger than the caches, each run by one thread per available core through a small C
kernel (``peak.c``) compiled on this machine with its C compiler (``$CC``, else ``cc``).
A figure is compared with it: share of peak, and impossible above it (``reporting.notices``).

Each kernel is timed in windows of ``WINDOW_S``; the best of ``REPEATS`` clean windows is kept
(``watch.Watcher`` judges each: one where other processes or the hypervisor took the cores is
measured again, up to ``REPEATS`` more times).
The result is cached per CPU (model, flags, cores, the kernels' source): a cache, rebuilt when any
of them changes. Where no compiler works, nothing is measured and the reason is kept: figures
then carry no share of peak (never a guessed one)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.fsutil import atomic_write_bytes, atomic_write_text, cache_dir, failure
from visionbench.harness.watch import Watcher
from visionbench.sysinfo import available_cpus, cpu_features, system_info

#: Kernels per precision, fastest instruction set first: (kernel, the CPU flags it needs, what
#: it runs). AMX (tile) kernels are not among them: an AMX machine's BF16 and INT8 peaks are
#: its AVX-512 ones here, so a figure there may show over 100% of them (said in the notice).
KERNELS: dict[str, tuple[tuple[str, frozenset[str], str], ...]] = {
    "fp32": (("fp32_avx512", frozenset({"avx512f"}), "AVX-512 FMA"),
             ("fp32_avx2", frozenset({"avx2", "fma"}), "AVX2 FMA")),
    "bf16": (("bf16_avx512", frozenset({"avx512f", "avx512_bf16"}), "AVX512_BF16 vdpbf16ps"),),
    "int8": (("int8_avx512vnni", frozenset({"avx512f", "avx512_vnni"}), "AVX512_VNNI vpdpbusd"),
             ("int8_avxvnni", frozenset({"avx2", "avx_vnni"}), "AVX-VNNI vpdpbusd"),
             ("int8_avx2", frozenset({"avx2"}), "AVX2 vpmaddubsw")),
}
#: Seconds per timed window (long enough for the watcher to judge it) and clean windows kept.
WINDOW_S = 0.3
REPEATS = 3
CACHE_NAME = "machine-peak.json"
#: Bytes of each of the triad's three arrays (split between the threads): far beyond any CPU's
#: last-level cache (256 MiB x 3; EPYC's largest L3s are 1.1 GiB across a socket's CCDs, but
#: each core reaches only its own CCD's 32-96 MiB).
TRIAD_ARRAY_BYTES = 256 * 2**20
#: The compiled kernels' folder in the cache.
KERNELS_DIR = "peak"

Note = Callable[[str], None]


@dataclass(frozen=True)
class PeakRate:
    """One precision's peak: billions of arithmetic operations a second (a multiply and an add
    count two) on ``threads`` cores at once, and the instructions that reached it."""

    gops: float
    isa: str
    threads: int
    #: Each clean window's rate (the best is ``gops``) and the windows set aside as disturbed.
    windows: tuple[float, ...] = ()
    disturbed: int = 0


@dataclass(frozen=True)
class Bandwidth:
    """The memory bandwidth every core reaches at once: GB/s (10^9 bytes) of STREAM's triad."""

    gbs: float
    threads: int
    array_mib: int
    windows: tuple[float, ...] = ()
    disturbed: int = 0
    method: str = "STREAM triad a = b + s*c, 12 bytes per element (write-allocate not counted)"


@dataclass(frozen=True)
class Peak:
    """The machine's peaks (precision -> rate) and memory bandwidth; ``notes`` say what was not
    measured and why."""

    rates: dict[str, PeakRate]
    notes: tuple[str, ...] = ()
    key: str = ""
    measured_at: str = ""
    #: Whether it came from the cache (measured by an earlier run on this machine).
    cached: bool = False
    bandwidth: Bandwidth | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Kernel:
    run: Callable[[int, int], Any]  # (iterations, thread index)
    ops: int  # per iteration and thread
    iters: int = field(default=0)
    #: Iterations of the first calibration try.
    start: int = 1000


def _source() -> bytes:
    return (resources.files("visionbench.harness") / "peak.c").read_bytes()


def _key(flags: frozenset[str], threads: int) -> str:
    """What the cached peak stands for: the CPU, the flags its kernels need, the cores, the
    kernels' source."""
    info = system_info()
    wanted = sorted({f for kernels in KERNELS.values() for _, need, _ in kernels for f in need
                     if f in flags})
    text = json.dumps([info.cpu_model, info.cpu_family_model_stepping, wanted, threads,
                       hashlib.sha256(_source()).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_kernels(where: Path) -> tuple[Path | None, str | None]:
    """The kernels as a shared library built here (reused while the source is unchanged), or
    None and why."""
    src = _source()
    lib = where / f"peak-{hashlib.sha256(src).hexdigest()[:12]}.so"
    if lib.exists():
        return lib, None
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        return None, f"no C compiler ({cc} not found; set CC) to build the peak kernels"
    c_file = where / f".peak-{os.getpid()}.c"
    out = where / f".peak-{os.getpid()}.so"
    try:
        where.mkdir(parents=True, exist_ok=True)
        try:
            c_file.write_bytes(src)
            proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(c_file)],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
                return None, f"{cc} could not build the peak kernels: {last}"
            atomic_write_bytes(lib, out.read_bytes())
        finally:
            c_file.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
    except OSError as e:  # the cache not writable, or full
        return None, f"cannot build the peak kernels in the cache: {failure(e, where)}"
    return lib, None


def _kernel(lib: ctypes.CDLL, name: str) -> _Kernel:
    run = getattr(lib, f"vb_{name}")
    run.restype, run.argtypes = ctypes.c_double, [ctypes.c_long]
    ops = getattr(lib, f"vb_ops_{name}")
    ops.restype = ctypes.c_long
    return _Kernel(lambda iters, _: run(iters), int(ops()))


def _triad(lib: ctypes.CDLL, threads: int, arrays: list[np.ndarray]) -> _Kernel:
    """The triad over ``arrays`` (a, b, c), thread i on the i-th of ``threads`` equal slices;
    an iteration moves 12 bytes per element of a slice."""
    run = lib.vb_triad
    ptr = ctypes.POINTER(ctypes.c_float)
    run.restype, run.argtypes = ctypes.c_double, [ptr, ptr, ptr, ctypes.c_long, ctypes.c_long]
    n = arrays[0].size // threads
    slices = [[x[i * n:(i + 1) * n].ctypes.data_as(ptr) for x in arrays] for i in range(threads)]
    return _Kernel(lambda iters, i: run(*slices[i], n, iters), 12 * n, start=1)


def _calibrate(k: _Kernel) -> None:
    """Iterations for one window (one thread, timed alone)."""
    iters = k.start
    while True:
        t = time.perf_counter()
        k.run(iters, 0)
        if (dt := time.perf_counter() - t) >= 0.02 or iters > 10**11:
            break
        iters *= 4
    k.iters = max(int(iters * WINDOW_S / dt), 1)


def _window(k: _Kernel, threads: int) -> float:
    """One window: ``threads`` threads run the kernel at once (ctypes lets go of the GIL);
    GOP/s over the wall time from the release to the last one's end."""
    go = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        go.wait()
        k.run(k.iters, i)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return threads * k.iters * k.ops / (time.perf_counter() - start) / 1e9


def _rate(k: _Kernel, threads: int, isa: str, watcher: Watcher, note: Note | None) -> PeakRate:
    """The best of ``REPEATS`` clean windows (a disturbed one measured again after the cores
    are quiet, up to ``REPEATS`` times)."""
    _calibrate(k)
    clean: list[float] = []
    disturbed = 0
    while len(clean) < REPEATS and disturbed < REPEATS:
        watcher.begin()
        rate = _window(k, threads)
        seen = watcher.end()
        # The best window is kept, and a slow one cannot raise it: what matters is that enough
        # windows ran alone (others' time, steal), not the probe's reading of the cores' speed.
        if seen.cause in (None, "slowdown"):
            clean.append(rate)
            continue
        disturbed += 1
        if note:
            note(f"peak ({isa}): window disturbed, {seen.disturbed}; measured again")
        watcher.settle(WINDOW_S)
    watcher.forget()
    return PeakRate(max(clean, default=0.0), isa, threads, tuple(clean), disturbed)


def measure_peak(key: str = "", note: Note | None = None) -> Peak:
    """Measure every precision's peak this CPU has instructions for (not cached)."""
    flags = cpu_features().flags
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lib_path, why = compile_kernels(cache_dir() / KERNELS_DIR)
    if lib_path is None:
        return Peak({}, (f"peak not measured: {why}",), key, at)
    lib = ctypes.CDLL(str(lib_path))
    watcher = Watcher.here()
    threads = available_cpus()
    rates: dict[str, PeakRate] = {}
    notes: list[str] = []
    for precision, kernels in KERNELS.items():
        found = [_rate(_kernel(lib, name), threads, isa, watcher, note)
                 for name, need, isa in kernels if need <= flags]
        if clean := [r for r in found if r.windows]:
            rates[precision] = max(clean, key=lambda r: r.gops)
        elif found:
            notes.append(f"{precision} peak not measured: every window was disturbed")
        elif precision == "bf16":
            notes.append("no native BF16 instructions (AVX512_BF16): BF16 runs on FP32's "
                         "units, and FP32's peak applies")
        else:
            notes.append(f"no {precision} kernel for this CPU's instructions")
    bandwidth = measure_bandwidth(lib, threads, watcher, note)
    if bandwidth is None:
        notes.append("memory bandwidth not measured: every window was disturbed")
    return Peak(rates, tuple(notes), key, at, bandwidth=bandwidth)


def measure_bandwidth(lib: ctypes.CDLL, threads: int, watcher: Watcher, note: Note | None,
                      array_bytes: int = TRIAD_ARRAY_BYTES) -> Bandwidth | None:
    """STREAM's triad on every core at once over three arrays of ``array_bytes`` (touched
    first, so no page fault is timed); None where every window was disturbed."""
    n = array_bytes // 4 // threads * threads
    arrays = [np.full(n, v, dtype=np.float32) for v in (0.0, 1.0, 2.0)]
    rate = _rate(_triad(lib, threads, arrays), threads, "triad", watcher, note)
    if not rate.windows:
        return None
    return Bandwidth(rate.gops, threads, array_bytes // 2**20, rate.windows, rate.disturbed)


def machine_peak(note: Note | None = None, refresh: bool = False) -> Peak:
    """This machine's peak from the cache, measured (and cached) where there is none for it."""
    key = _key(cpu_features().flags, available_cpus())
    path = cache_dir() / CACHE_NAME
    if not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                rates = {p: PeakRate(**{**r, "windows": tuple(r["windows"])})
                         for p, r in data["rates"].items()}
                bw = data.get("bandwidth")
                return Peak(rates, tuple(data["notes"]), key, data["measured_at"], cached=True,
                            bandwidth=bw and Bandwidth(**{**bw, "windows": tuple(bw["windows"])}))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none, another machine's or unreadable: measured again
    if note:
        note("measuring this machine's peak arithmetic rate per precision (once; cached)")
    peak = measure_peak(key, note)
    if peak.rates:
        try:
            atomic_write_text(path, json.dumps(peak.as_dict(), indent=1))
        except OSError as e:  # measured, just not kept: measured again next time
            if note:
                note(f"the peak is not cached: {failure(e, path)}")
    return peak
