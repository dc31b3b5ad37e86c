"""CPU package and DRAM energy from the Linux powercap interface (RAPL, on Intel and on AMD since
Linux 5.8): each domain's cumulative ``energy_uj`` counter read at the edges of a timed window,
wrap-around handled with the domain's ``max_energy_range_uj``. Nothing is estimated: where there
is no powercap tree, or its counters cannot be read (root-only on kernels since 5.10), the meter
says why and measures nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: A folder standing for /sys/class/powercap (tests give a fake tree).
POWERCAP_ENV = "VISIONBENCH_POWERCAP"
POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Domain:
    """One RAPL domain: a CPU package or its DRAM."""

    name: str  # e.g. "package-0", "package-0/dram"
    counter: Path
    range_uj: int

    def read(self) -> int:
        return int(self.counter.read_text())


def _root() -> Path:
    return Path(os.environ.get(POWERCAP_ENV) or POWERCAP)


def _zone(path: Path) -> tuple[str, Path, int]:
    name = (path / "name").read_text().strip()
    return name, path / "energy_uj", int((path / "max_energy_range_uj").read_text())


class EnergyMeter:
    """The machine's package and DRAM domains, or why there are none (``unavailable``)."""

    def __init__(self, domains: list[Domain], unavailable: str | None = None) -> None:
        self.domains = domains
        self.unavailable = unavailable

    @classmethod
    def open(cls) -> EnergyMeter:
        root = _root()
        if not root.is_dir():
            return cls([], f"this machine has no powercap interface ({root} is missing: no RAPL "
                           "driver, or a virtual machine that does not pass it through)")
        domains: list[Domain] = []
        try:
            # Top-level zones are packages (intel-rapl:N; AMD's driver uses the same names);
            # their subzones core, uncore and dram: only DRAM is not inside the package's figure.
            for zone in sorted(root.glob("intel-rapl:*")):
                if zone.name.count(":") != 1:
                    continue
                name, counter, rng = _zone(zone)
                if not name.startswith("package"):
                    continue  # psys (the platform) overlaps the packages
                domains.append(Domain(name, counter, rng))
                for sub in sorted(zone.glob(f"{zone.name}:*")):
                    sub_name, sub_counter, sub_rng = _zone(sub)
                    if sub_name == "dram":
                        domains.append(Domain(f"{name}/dram", sub_counter, sub_rng))
            for d in domains:
                d.read()
        except PermissionError as e:
            return cls([], f"the powercap counters are not readable by this user ({e.filename}: "
                           "root only on Linux 5.10 and later)")
        except (OSError, ValueError) as e:
            return cls([], f"the powercap tree at {root} could not be read ({e})")
        if not domains:
            return cls([], f"the powercap tree at {root} has no RAPL package domain")
        return cls(domains)

    def read(self) -> list[int] | None:
        """Every domain's counter now (microjoules), or None when unavailable."""
        return [d.read() for d in self.domains] if self.domains else None

    def joules(self, start: list[int], end: list[int]) -> dict[str, float]:
        """Energy per domain between two readings; a counter that wrapped once is corrected by
        its range (a window longer than a wrap period, minutes at full load, cannot be told)."""
        out = {}
        for d, a, b in zip(self.domains, start, end, strict=True):
            delta = b - a if b >= a else b + d.range_uj - a
            out[d.name] = delta / 1e6
        return out
