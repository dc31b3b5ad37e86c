"""The machine's state: what decides how fast the same code runs today (the frequency governor,
boost, SMT, transparent huge pages, isolated cores, the hypervisor's steal, what else is running),
read from /proc and /sys at a run's start and recorded with it, judged with advice as ``pyperf
system show`` does (``visionbench sysinfo``), and set where root may (``sysinfo --tune``: the
performance governor and a stated THP setting, nothing of the user's stopped; ``--reset`` puts
back what it changed). What a machine does not show is said, with why. Also the readers of
/proc that the window watcher uses (``harness.watch``). A leaf: it imports nothing of
visionbench but its errors."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from visionbench.errors import VisionbenchError

#: Seconds the state at a run's start is sampled over (steal, pressure, top consumers).
SAMPLE_S = 0.25
#: The transparent huge pages setting ``--tune`` applies: huge pages where a program asks for them
#: (madvise). ``always`` adds khugepaged's background collapsing, CPU work and latency spikes
#: that are not the engine's; ``never`` denies them to a runtime that asks.
THP_TUNED = "madvise"
GOVERNOR_TUNED = "performance"
#: The file in visionbench's cache where ``--tune`` keeps what it changed, for ``--reset``.
TUNE_SAVED = "machine-tune.json"

Verdict = Literal["ok", "warn", "note", "hidden"]


class Proc(NamedTuple):
    comm: str
    ppid: int
    ticks: int  # user + system CPU ticks
    started: int  # clock ticks after boot: a pid reused since is another process


def cpu_times(proc: Path, cpus: tuple[int, ...] | None = None) -> dict[int, list[int]]:
    """Per CPU (those of ``cpus``, else all): user nice system idle iowait irq softirq steal."""
    out: dict[int, list[int]] = {}
    try:
        text = (proc / "stat").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            cpu = int(name[3:])
            if cpus is None or cpu in cpus:
                out[cpu] = ([int(v) for v in values[:8]] + [0] * 8)[:8]
    return out


def processes(proc: Path) -> dict[int, Proc]:
    """Every process's name, parent and CPU ticks (``/proc/PID/stat``)."""
    out: dict[int, Proc] = {}
    root = str(proc)
    for name in os.listdir(root):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{root}/{name}/stat", os.O_RDONLY)
            try:
                raw = os.read(fd, 1024)
            finally:
                os.close(fd)
        except OSError:
            continue  # gone since the listing
        close = raw.rfind(b")")
        rest = raw[close + 2:].split(maxsplit=20)
        if len(rest) < 20:
            continue
        out[int(name)] = Proc(raw[raw.find(b"(") + 1:close].decode(errors="replace"),
                              int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19]))
    return out


def pressure_us(proc: Path) -> int | None:
    """CPU pressure: microseconds some task waited for a CPU (``/proc/pressure/cpu``)."""
    try:
        text = (proc / "pressure" / "cpu").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some"):
            for part in line.split():
                if part.startswith("total="):
                    return int(part[6:])
    return None


#: Fields of a /proc/stat CPU line that count as busy: user, nice, system, irq, softirq.
BUSY = (0, 1, 2, 5, 6)
STEAL, IOWAIT = 7, 4


def delta(a: dict[int, list[int]], b: dict[int, list[int]], fields: tuple[int, ...]) -> int:
    """Ticks of ``fields`` from ``cpu_times`` reading ``a`` to reading ``b``, over the CPUs in
    both."""
    return sum(b[c][i] - a[c][i] for c in b if c in a for i in fields)


def tree(procs: dict[int, Proc], root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def read_or_none(path: Path) -> str | None:
    """A /proc or /sys file's text, stripped; None where it cannot be read (absent, or hidden)."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _selected(text: str | None) -> str | None:
    """The bracketed choice of a sysfs list ("always [madvise] never" -> "madvise")."""
    if text is None:
        return None
    return next((w[1:-1] for w in text.split() if w.startswith("[")), text)


@dataclass(frozen=True)
class Busy:
    """A process that used CPU while the state was sampled."""

    comm: str
    pid: int
    cores: float


@dataclass(frozen=True)
class MachineState:
    """The state at a run's start. None: the machine does not show it (``hidden`` says why)."""

    governors: dict[str, int] | None  # governor -> CPUs running it
    cpufreq_driver: str | None
    boost: bool | None
    smt: str | None  # on, off, forceoff, notsupported, notimplemented
    thp: str | None
    thp_defrag: str | None
    isolated_cpus: str | None  # "" where none
    hypervisor: str | None  # its name, "" on bare metal
    steal: float | None  # share of the CPUs' time stolen over the sample
    steal_since_boot: float | None
    pressure: float | None  # share of the sample some task waited for a CPU
    load_1min: float | None
    runnable: int | None  # runnable threads (this sampler's included)
    busy: list[Busy] = field(default_factory=list)
    kernel: str | None = None
    microcode: str | None = None
    hidden: dict[str, str] = field(default_factory=dict)  # knob -> why it cannot be seen

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    verdict: Verdict
    advice: str = ""


class Machine:
    """The state files under ``root`` (``/`` here; a made-up tree in tests)."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self.proc = root / "proc"
        self.cpu = root / "sys/devices/system/cpu"
        self.thp_dir = root / "sys/kernel/mm/transparent_hugepage"

    def _cpus(self) -> list[Path]:
        return sorted((p for p in self.cpu.glob("cpu[0-9]*") if p.name[3:].isdigit()),
                      key=lambda p: int(p.name[3:]))

    def governor_files(self) -> list[Path]:
        return [f for c in self._cpus() if (f := c / "cpufreq/scaling_governor").exists()]

    def _hypervisor(self) -> str | None:
        kind = read_or_none(self.root / "sys/hypervisor/type")
        if kind:
            return kind
        info = read_or_none(self.proc / "cpuinfo") or ""
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
        if " hypervisor" not in flags:
            return "" if flags else None
        dmi = read_or_none(self.root / "sys/class/dmi/id/sys_vendor") or ""
        return dmi or "unnamed (the CPU's hypervisor flag)"

    def _boost(self) -> bool | None:
        if (b := read_or_none(self.cpu / "cpufreq/boost")) is not None:
            return b == "1"
        if (t := read_or_none(self.cpu / "intel_pstate/no_turbo")) is not None:
            return t == "0"
        return None

    def state(self, sample_s: float = SAMPLE_S, own: int | None = None) -> MachineState:
        """Read the state, sampling steal, pressure and what runs for ``sample_s`` (``own``:
        the process whose tree is left out of what runs; default this one)."""
        own = os.getpid() if own is None else own
        t0, cpu0, procs0, psi0 = (time.perf_counter(), cpu_times(self.proc), processes(self.proc),
                                  pressure_us(self.proc))
        time.sleep(sample_s)
        wall = time.perf_counter() - t0
        cpu1, procs1, psi1 = cpu_times(self.proc), processes(self.proc), pressure_us(self.proc)
        hz = os.sysconf("SC_CLK_TCK")
        steal = since_boot = None
        if cpu0 and cpu1:
            stolen = delta(cpu0, cpu1, (STEAL,))
            steal = max(stolen, 0) / (wall * hz * len(cpu1))
            totals = [sum(v) for v in cpu1.values()]
            since_boot = sum(v[STEAL] for v in cpu1.values()) / max(sum(totals), 1)
        mine = tree(procs1, own)
        busy = []
        for pid, p in procs1.items():
            was = procs0.get(pid)
            ticks = p.ticks - (was.ticks if was is not None and was.started == p.started else 0)
            if pid not in mine and ticks / (wall * hz) >= 0.02:
                busy.append(Busy(p.comm, pid, ticks / (wall * hz)))
        busy.sort(key=lambda b: -b.cores)
        governors: dict[str, int] = {}
        for f in self.governor_files():
            if (g := read_or_none(f)) is not None:
                governors[g] = governors.get(g, 0) + 1
        first = self._cpus()[0] if self._cpus() else self.cpu / "cpu0"
        loadavg = (read_or_none(self.proc / "loadavg") or "").split()
        cpuinfo = read_or_none(self.proc / "cpuinfo") or ""
        microcode = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                          if line.startswith("microcode")), None)
        hidden = {}
        hypervisor = self._hypervisor()
        in_vm = " (a virtual machine: its host sets the clock)" if hypervisor else ""
        if not governors:
            hidden["governor"] = "no cpufreq driver shows a governor" + in_vm
            hidden["frequency"] = ("no cpufreq driver shows the clock" + in_vm + "; /proc/cpuinfo's "
                                   "MHz is the nominal rate, not the running frequency: the window "
                                   "watcher's probe measures the cores' effective speed instead")
        boost = self._boost()
        if boost is None:
            hidden["boost"] = "neither cpufreq/boost nor intel_pstate/no_turbo is shown" + in_vm
        if not list(self.cpu.glob("cpu[0-9]*/thermal_throttle")):
            hidden["throttling"] = "no thermal_throttle counters" + in_vm
        return MachineState(
            governors=governors or None,
            cpufreq_driver=read_or_none(first / "cpufreq/scaling_driver"),
            boost=boost, smt=read_or_none(self.cpu / "smt/control"),
            thp=_selected(read_or_none(self.thp_dir / "enabled")),
            thp_defrag=_selected(read_or_none(self.thp_dir / "defrag")),
            isolated_cpus=read_or_none(self.cpu / "isolated"), hypervisor=hypervisor,
            steal=steal, steal_since_boot=since_boot,
            pressure=None if psi0 is None or psi1 is None else (psi1 - psi0) / 1e6 / wall,
            load_1min=float(loadavg[0]) if loadavg else None,
            runnable=int(loadavg[3].split("/")[0]) if len(loadavg) > 3 else None,
            busy=busy[:5], kernel=platform.release() if self.root == Path("/") else None,
            microcode=microcode, hidden=hidden)


def checks(s: MachineState, cpus: int) -> list[Check]:
    """Each fact judged, with what to do about it (``pyperf system show``'s way)."""
    out: list[Check] = []
    if s.governors:
        govs = ", ".join(f"{g} ({n} CPUs)" for g, n in s.governors.items())
        good = set(s.governors) == {GOVERNOR_TUNED}
        out.append(Check("governor", f"{govs}; driver {s.cpufreq_driver or '?'}",
                         "ok" if good else "warn", "" if good else
                         "the clock follows the load: figures vary with it; `sudo visionbench "
                         "sysinfo --tune` sets the performance governor"))
    else:
        out.append(Check("governor", "not visible", "hidden", s.hidden.get("governor", "")))
        out.append(Check("frequency", "not visible", "hidden", s.hidden.get("frequency", "")))
    if s.boost is not None:
        out.append(Check("boost", "on" if s.boost else "off", "note",
                         "on: the clock depends on temperature and on how many cores are busy; "
                         "report it with the figures" if s.boost else ""))
    else:
        out.append(Check("boost", "not visible", "hidden", s.hidden.get("boost", "")))
    if s.smt is not None:
        out.append(Check("SMT", s.smt, "note" if s.smt == "on" else "ok",
                         "siblings share a core's units: pinned instances take one CPU per "
                         "physical core" if s.smt == "on" else ""))
    if s.thp is not None:
        out.append(Check("transparent huge pages", f"{s.thp} (defrag {s.thp_defrag})",
                         "ok" if s.thp == THP_TUNED else "note",
                         "" if s.thp == THP_TUNED else f"visionbench's stated setting is "
                         f"{THP_TUNED}; `sudo visionbench sysinfo --tune` sets it"))
    if s.isolated_cpus is not None:
        out.append(Check("isolated CPUs", s.isolated_cpus or "none", "ok" if s.isolated_cpus else
                         "note", "" if s.isolated_cpus else "the scheduler may run anything on "
                         "the measured cores; the window watcher sees and names it"))
    if s.hypervisor is not None:
        out.append(Check("hypervisor", s.hypervisor or "none (bare metal)",
                         "note" if s.hypervisor else "ok",
                         "a guest: its host decides the clock and may run other guests on the "
                         "same cores (steal)" if s.hypervisor else ""))
    if s.steal is not None:
        high = s.steal > 0.02
        out.append(Check("steal", f"{s.steal:.1%} now, {s.steal_since_boot or 0:.1%} since boot",
                         "warn" if high else "ok", "the host is taking this guest's CPU time: "
                         "windows over the threshold are measured again" if high else ""))
    if s.pressure is not None:
        high = s.pressure > 0.05
        out.append(Check("CPU pressure", f"{s.pressure:.1%} of the time some task waited",
                         "warn" if high else "ok", "more runnable work than CPUs" if high else ""))
    else:
        out.append(Check("CPU pressure", "not visible", "hidden",
                         "no /proc/pressure/cpu (a kernel without PSI)"))
    if s.load_1min is not None:
        high = s.load_1min > 0.5 * cpus
        out.append(Check("load", f"{s.load_1min:.2f} (1 min), {s.runnable} runnable",
                         "warn" if high else "ok",
                         "other work is running: see what below" if high else ""))
    for b in s.busy:
        out.append(Check("busy process", f"{b.comm} (pid {b.pid}) {b.cores:.0%} of a core", "warn",
                         "it will share the measured cores; the window watcher names it"))
    return out


@dataclass(frozen=True)
class Change:
    knob: str
    path: str
    before: str
    after: str


class Tuner:
    """Sets what root may for steadier figures, saving what was there to ``saved`` for reset."""

    def __init__(self, machine: Machine, saved: Path) -> None:
        self.machine, self.saved = machine, saved

    def plan(self) -> tuple[list[Change], list[str]]:
        """The changes to make, and the knobs this machine does not offer (with why)."""
        changes: list[Change] = []
        missing: list[str] = []
        m = self.machine
        files = m.governor_files()
        if not files:
            missing.append("governor: no cpufreq driver (in a virtual machine the host sets the "
                           "clock)")
        for f in files:
            available = (read_or_none(f.parent / "scaling_available_governors") or "").split()
            before = read_or_none(f) or ""
            if GOVERNOR_TUNED not in available:
                missing.append(f"governor of {f.parent.parent.name}: {GOVERNOR_TUNED} not offered "
                               f"({' '.join(available) or 'none listed'})")
            elif before != GOVERNOR_TUNED:
                changes.append(Change("governor", str(f), before, GOVERNOR_TUNED))
        thp = m.thp_dir / "enabled"
        if (now := _selected(read_or_none(thp))) is None:
            missing.append("transparent huge pages: not offered by this kernel")
        elif now != THP_TUNED:
            changes.append(Change("transparent huge pages", str(thp), now, THP_TUNED))
        return changes, missing

    def tune(self) -> tuple[list[Change], list[str]]:
        """Apply ``plan()``; the state before is saved first (kept from an earlier tune)."""
        changes, missing = self.plan()
        if not changes:
            return changes, missing
        saved = self._load() if self.saved.exists() else {}
        for c in changes:
            saved.setdefault(c.path, c.before)
        self.saved.parent.mkdir(parents=True, exist_ok=True)
        self.saved.write_text(json.dumps(saved, indent=1))
        for c in changes:
            _write(Path(c.path), c.after)
        return changes, missing

    def reset(self) -> list[Change]:
        """Put back what ``tune`` changed."""
        if not self.saved.exists():
            raise VisionbenchError("nothing to reset: `visionbench sysinfo --tune` has not "
                                   f"changed this machine (no {self.saved})")
        done = []
        for path, before in self._load().items():
            now = _selected(read_or_none(Path(path))) or ""
            _write(Path(path), before)
            done.append(Change(Path(path).name, path, now, before))
        self.saved.unlink()
        return done

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.saved.read_text())
        except (OSError, ValueError) as e:
            raise VisionbenchError(f"cannot read the saved state {self.saved}: {e}") from e
        if not isinstance(data, dict):
            raise VisionbenchError(f"{self.saved} does not hold a saved state")
        return {str(k): str(v) for k, v in data.items()}


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except PermissionError:
        raise VisionbenchError(f"cannot write {path}: changing the machine's state needs root "
                               "(sudo visionbench sysinfo --tune)") from None
    except OSError as e:
        raise VisionbenchError(f"cannot write {path}: {e.strerror}") from None
