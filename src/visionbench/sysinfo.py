"""System facts recorded with every run: CPU, the ISA extensions that matter for inference, memory, OS."""

from __future__ import annotations

import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import psutil

#: CPU flags (Linux /proc/cpuinfo names) that decide which inference kernels can run.
INFERENCE_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

# py-cpuinfo spells some flags without the underscore.
_CPUINFO_ALIASES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avxvnni": "avx_vnni"}


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        return any(f in self.flags for f in VNNI_FLAGS)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags


def _proc_cpuinfo() -> dict[str, str]:
    """First processor block of /proc/cpuinfo plus the count of distinct sockets."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first: dict[str, str] = {}
    sockets: set[str] = set()
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "physical id":
            sockets.add(v)
        first.setdefault(k, v)
    first["_sockets"] = str(max(len(sockets), 1))
    return first


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    info = _proc_cpuinfo()
    if "flags" in info:
        flags = set(info["flags"].split())
    else:  # not Linux: ask py-cpuinfo
        import cpuinfo

        flags = {_CPUINFO_ALIASES.get(f, f) for f in cpuinfo.get_cpu_info().get("flags", [])}
    return CpuFeatures(frozenset(flags))


@dataclass(frozen=True)
class SystemInfo:
    hostname: str
    cpu_model: str
    cpu_vendor: str
    cpu_family_model_stepping: str
    sockets: int
    physical_cores: int | None
    logical_cpus: int | None
    cpus_available: int
    numa_nodes: int
    isa_flags: list[str]
    bf16_native: bool
    int8_vnni: bool
    hypervisor: bool
    memory_total_gib: float
    os: str
    kernel: str
    python: str

    def as_dict(self) -> dict:
        return asdict(self)


def available_cpus() -> int:
    """Cores this process may run on (affinity and cgroup masks respected where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _numa_nodes() -> int:
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    return max(len(nodes), 1)


def cpu_list(text: str) -> list[int]:
    """Linux's CPU list format ("0-3,8,10-11") as CPU numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def numa_cores() -> list[list[int]]:
    """Per NUMA node, one CPU of each physical core this process may run on (hyper-threaded
    siblings left out, as the reference scripts pin to physical cores); nodes with none dropped."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return [list(range(os.cpu_count() or 1))]
    nodes = sorted(Path("/sys/devices/system/node").glob("node[0-9]*"),
                   key=lambda p: int(p.name[4:]))
    node_cpus = [set(cpu_list((n / "cpulist").read_text())) for n in nodes] or [set(allowed)]
    out: list[list[int]] = []
    for cpus in node_cpus:
        seen: set[tuple[str, str]] = set()
        cores: list[int] = []
        for cpu in (c for c in allowed if c in cpus):
            topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            try:
                key = ((topo / "physical_package_id").read_text().strip(),
                       (topo / "core_id").read_text().strip())
            except OSError:
                key = ("cpu", str(cpu))
            if key not in seen:
                seen.add(key)
                cores.append(cpu)
        if cores:
            out.append(cores)
    return out or [allowed]


@lru_cache(maxsize=1)
def system_info() -> SystemInfo:
    info = _proc_cpuinfo()
    model = info.get("model name", "")
    if not model:
        import cpuinfo

        model = cpuinfo.get_cpu_info().get("brand_raw", platform.processor())
    feats = cpu_features()
    fms = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return SystemInfo(
        hostname=socket.gethostname(),
        cpu_model=model or "unknown",
        cpu_vendor=info.get("vendor_id", platform.machine()),
        cpu_family_model_stepping=fms,
        sockets=int(info.get("_sockets", "1")),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cpus=psutil.cpu_count(logical=True),
        cpus_available=available_cpus(),
        numa_nodes=_numa_nodes(),
        isa_flags=[f for f in INFERENCE_FLAGS if f in feats.flags],
        bf16_native=feats.bf16,
        int8_vnni=feats.vnni,
        hypervisor="hypervisor" in feats.flags,
        memory_total_gib=round(psutil.virtual_memory().total / 2**30, 2),
        os=platform.platform(),
        kernel=platform.release(),
        python=sys.version.split()[0],
    )
