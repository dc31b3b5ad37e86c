"""The process environment a worker runs under (``--allocator``, ``--omp-runtime``, ``--env``):
the variables that set it (``Environment.variables``: the libraries preloaded through LD_PRELOAD,
found on this machine, and the variables given), and what a process really runs with, read from
inside it (``observe``): which library serves ``malloc`` and the OpenMP entry points (``dladdr``
of the symbol the global scope resolves, as every library loaded later resolves it), and the
allocator, OpenMP and TBB libraries mapped (``/proc/self/maps``). ``verify`` is called by every
launched child before its target: a preloaded library that is not mapped, or that does not serve
its entry point, ends the child with one line; nothing runs without the environment it was given.

LD_PRELOAD only acts on a process started with it: the environment is set on worker processes
(``launch.process``), never on the running one."""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError

#: The allocators a process can be given: glibc's own (nothing preloaded), and the Debian
#: packages' (the library, the package that installs it).
ALLOCATOR_LIBS = {"tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
                  "jemalloc": ("libjemalloc.so.2", "libjemalloc2")}
#: Intel's OpenMP runtime: the library, and the PyPI package that installs it.
INTEL_OPENMP = ("libiomp5.so", "intel-openmp")
#: The variables visionbench sets itself: the libraries it preloaded (checked inside the child),
#: and the environment the child runs under (``here``).
PRELOADED_ENV = "VISIONBENCH_PRELOADED"
ENVIRONMENT_ENV = "VISIONBENCH_ENVIRONMENT"
#: The entry point a preloaded library must serve for it to be in use.
SERVES = {"tcmalloc": "malloc", "jemalloc": "malloc", "intel": "omp_get_max_threads"}
#: Mapped libraries worth recording: allocators, OpenMP and TBB runtimes.
RUNTIME_LIB = re.compile(r"^lib(tcmalloc|jemalloc|gomp|iomp|omp|tbb)")


@dataclass(frozen=True)
class Environment:
    """One process environment: an allocator, an OpenMP runtime, variables (name, value)."""

    allocator: str = "glibc"
    omp_runtime: str = "shipped"
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", tuple(sorted(tuple(kv) for kv in self.env)))

    @property
    def default(self) -> bool:
        return self == Environment()

    @property
    def tag(self) -> str:
        """Short, for ids: tcmalloc-iomp-KMP_BLOCKTIME1 ('' for the default)."""
        parts = [] if self.allocator == "glibc" else [self.allocator]
        parts += ["iomp"] if self.omp_runtime == "intel" else []
        parts += [re.sub(r"[^A-Za-z0-9_]", "", k + v) for k, v in self.env]
        return "-".join(parts)

    def describe(self) -> str:
        parts = [f"allocator {self.allocator}", f"OpenMP {self.omp_runtime}"]
        return ", ".join(parts + [f"{k}={v}" for k, v in self.env])

    def flags(self) -> list[str]:
        """The command line's flags that ask for it."""
        out = [] if self.allocator == "glibc" else ["--allocator", self.allocator]
        out += [] if self.omp_runtime == "shipped" else ["--omp-runtime", self.omp_runtime]
        for k, v in self.env:
            out += ["--env", f"{k}={v}"]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"allocator": self.allocator, "omp_runtime": self.omp_runtime,
                "env": dict(self.env)}

    def libraries(self) -> dict[str, Path]:
        """What is preloaded, by what it serves ('tcmalloc', 'intel'); raises VisionbenchError,
        in one line, where a library asked for is not installed."""
        out = {}
        if self.allocator != "glibc":
            name, package = ALLOCATOR_LIBS[self.allocator]
            path = system_library(name)
            if path is None:
                raise VisionbenchError(f"{self.allocator} asked for but {name} is not installed: "
                                       f"apt-get install {package}")
            out[self.allocator] = path
        if self.omp_runtime == "intel":
            path = intel_openmp()
            if path is None:
                raise VisionbenchError(f"--omp-runtime intel asked for but {INTEL_OPENMP[0]} is "
                                       f"not installed: pip install {INTEL_OPENMP[1]}")
            out["intel"] = path
        return out

    def variables(self) -> dict[str, str]:
        """The variables a child is started with, over the parent's ({} for the default)."""
        if self.default:
            return {}
        libs = self.libraries()
        out = dict(self.env)
        if libs:
            ours = [str(p) for p in libs.values()]
            theirs = [p for p in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":")
                      if p and p not in ours]
            out["LD_PRELOAD"] = ":".join(ours + theirs)
            out[PRELOADED_ENV] = json.dumps({k: str(p) for k, p in libs.items()})
        out[ENVIRONMENT_ENV] = json.dumps(self.as_dict(), sort_keys=True)
        return out


def here() -> Environment:
    """The environment this process was started under by visionbench (the default where none)."""
    given = os.environ.get(ENVIRONMENT_ENV)
    if not given:
        return Environment()
    d = json.loads(given)
    return Environment(d["allocator"], d["omp_runtime"], tuple(d["env"].items()))


def system_library(name: str) -> Path | None:
    """A shared library of the system's (a Debian package's), by its file name."""
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    for d in (f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if (p := Path(d) / name).exists():
            return p
    return None


def intel_openmp() -> Path | None:
    """Intel's libiomp5.so, where the ``intel-openmp`` package installed it (its data files go
    under the environment's prefix: ``<venv>/lib``)."""
    try:
        dist = importlib.metadata.distribution(INTEL_OPENMP[1])
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == INTEL_OPENMP[0] and (p := Path(str(dist.locate_file(f)))).exists():
            return p.resolve()
    return None


class _DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]


def serving(symbol: str) -> str | None:
    """The file of the library that serves ``symbol`` in this process's global scope (where the
    libraries loaded after start look first); None where no global library has it (an engine's
    private copy, loaded local to it)."""
    libc = ctypes.CDLL(None)
    libc.dlsym.restype, libc.dlsym.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    addr = libc.dlsym(None, symbol.encode())
    info = _DlInfo()
    if not addr or not libc.dladdr(addr, ctypes.byref(info)) or not info.fname:
        return None
    return os.path.realpath(info.fname.decode())


def mapped() -> list[str]:
    """The allocator, OpenMP and TBB libraries mapped into this process."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = {line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6}
    return sorted({os.path.realpath(p) for p in paths if RUNTIME_LIB.match(os.path.basename(p))})


def observe() -> dict[str, Any]:
    """What this process runs with, read from inside it: the environment asked for, the
    libraries serving ``malloc`` and OpenMP's entry points, the runtime libraries mapped, and the
    variables of the runtimes (OMP_, KMP_, GOMP_, MALLOC_, LD_PRELOAD) set in it."""
    asked = here()
    return {**asked.as_dict(), "malloc_from": serving("malloc"),
            "openmp_from": serving("omp_get_max_threads"), "mapped": mapped(),
            "variables": {k: v for k, v in sorted(os.environ.items())
                          if re.match(r"(OMP_|KMP_|GOMP_|MALLOC_|LD_PRELOAD$|TCMALLOC_)", k)}}


def verify() -> None:
    """In a child started with preloaded libraries: each is mapped and serves its entry point;
    raises VisionbenchError naming the first that does not."""
    given = os.environ.get(PRELOADED_ENV)
    if not given:
        return
    maps = mapped()
    for what, path in json.loads(given).items():
        real = os.path.realpath(path)
        if real not in maps:
            raise VisionbenchError(f"{path} was preloaded for {what} but is not mapped in the "
                                   "worker process: LD_PRELOAD did not take effect")
        if (by := serving(SERVES[what])) != real:
            raise VisionbenchError(f"{path} is mapped for {what} but {SERVES[what]} is served by "
                                   f"{by or 'no global library'}")
