"""What else happened on the measured cores while a window was timed: the cores' busy time taken
by processes that are not visionbench's (from ``/proc/stat`` less the CPU time of visionbench's
own process tree), the top other consumers by name and pid (``/proc/PID/stat`` deltas, those
allowed on the measured cores), steal and iowait, CPU pressure (``/proc/pressure/cpu``), the
cores' frequency where cpufreq shows it and thermal throttling where counted, and the cores'
effective speed from a short calibrated probe at each window's edge (the measuring thread runs
it, outside the timed window).

A window is **disturbed** when other processes took more than a share of the measured cores,
steal exceeded a share of them, or the probe found the cores slower than usual by more than a
share at both edges of the window (``Thresholds``); the usual speed is the median of this
process's probes. visionbench's own processes are the one that started the run and every
process below it (``launch.process.root_pid``): its worker processes and pinned instances are
never a disturbance. Nor, in a fleet whose nodes share a machine, are another node's processes of
the same fleet run (they carry the run's mark, ``launch.process.FLEET_ENV``, in their
environment): their time is recorded as the neighbours'. Process names only (``comm``), never
command lines."""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from visionbench.launch.process import FLEET_ENV, root_pid
from visionbench.machine import (
    BUSY,
    IOWAIT,
    STEAL,
    Proc,
    cpu_times,
    delta,
    pressure_us,
    processes,
    read_or_none,
    tree,
)
from visionbench.sysinfo import cpu_list

#: Consumers named per window.
TOP = 3
#: Others' CPU time under this share of a core is not named (scheduler noise, this tool's shell).
NAME_FLOOR = 0.02
#: Windows shorter than this are recorded, not judged: /proc counts CPU time in clock ticks
#: (10 ms), too coarse to tell a share of a shorter window.
MIN_JUDGED_S = 0.25
#: After a disturbed window, the cores are read this often until they are quiet again.
SETTLE_STEP_S = 0.25
#: ... for at most this many times the disturbed window's length, and at least this long.
SETTLE_WINDOWS = 2.0
SETTLE_MIN_S = 5.0
#: Spins of the probe at each window edge; the fastest is kept (a spin slowed by an interrupt
#: says nothing of the core's speed).
PROBE_SPINS = 5
#: Each spin's target length in seconds (calibrated once per process).
PROBE_SPIN_S = 0.0005


@dataclass(frozen=True)
class Thresholds:
    """When a window is disturbed (shares from 0 to 1)."""

    #: Other processes' CPU time over the window, as a share of the measured cores' time.
    others: float = 0.10
    #: Steal over the window, as a share of the measured cores' time.
    steal: float = 0.10
    #: The probe's speed below this process's median, at both edges of the window.
    slowdown: float = 0.10


@dataclass(frozen=True)
class Consumer:
    """A process that ran on the measured cores during a window: its name, pid and the cores'
    worth of CPU it used (1.0: one core for the whole window). Pid 0: time no process present at
    both edges accounts for (processes that exited, interrupts)."""

    comm: str
    pid: int
    cores: float

    def describe(self) -> str:
        who = self.comm if self.pid == 0 else f"{self.comm} (pid {self.pid})"
        return f"{who} used {self.cores:.0%} of a core"


@dataclass(frozen=True)
class WindowWatch:
    """What the watcher saw over one window (shares of the measured cores' time, 0 to 1)."""

    seconds: float
    cpus: tuple[int, ...]
    others: float
    steal: float
    iowait: float
    #: Share of the wall time some task waited for a CPU (PSI "some"); None: not shown.
    pressure: float | None
    #: The probe's speed at the window's end relative to this process's median (1.0: as usual).
    speed: float | None
    #: The cores' mean frequency at the window's end where cpufreq shows it.
    freq_mhz: float | None
    #: Thermal throttling events on the measured cores during the window, where counted.
    throttled: int | None
    top: tuple[Consumer, ...] = ()
    #: A fleet's other nodes' processes sharing the measured cores (not counted in ``others``).
    neighbours: float = 0.0
    #: CPU seconds the watcher used for this window's /proc and /sys reads (at its edges).
    watcher_cpu_s: float = 0.0
    #: Seconds the speed probe ran at the window's end (in the measuring thread, between windows).
    probe_s: float | None = None
    #: Why the window is disturbed; None: it is clean.
    disturbed: str | None = None
    #: What disturbed it: "others", "steal" or "slowdown" (the probe's alone).
    cause: str | None = None
    #: Seconds waited after it for the cores to be quiet before the next window.
    waited_s: float | None = None


@dataclass(frozen=True)
class _Snapshot:
    at: float
    cpu: dict[int, list[int]]  # per CPU: user nice system idle iowait irq softirq steal
    procs: dict[int, Proc]
    pressure_us: int | None
    throttle: int | None


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


@dataclass
class Watcher:
    """Watches the windows timed on ``cpus`` by this process (one per process: the probe's
    speeds are kept across its measurements)."""

    cpus: tuple[int, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    #: Whether to run the speed probe (off where a test gives made-up /proc files).
    probe: bool = True
    _hz: int = field(init=False, default=100)
    _spins: int = field(init=False, default=0)
    _rates: list[float] = field(init=False, default_factory=list)
    _last: _Snapshot | None = field(init=False, default=None)
    _edge_speed: float | None = field(init=False, default=None)
    _begin_cost: float = field(init=False, default=0.0)
    #: The cpufreq and thermal-throttle files of the measured cores that exist (looked up once).
    _freq_files: list[Path] = field(init=False, default_factory=list)
    _throttle_files: list[Path] = field(init=False, default_factory=list)

    @classmethod
    def here(cls, thresholds: Thresholds | None = None) -> Watcher:
        cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else (
            tuple(range(os.cpu_count() or 1)))
        return cls(cpus, thresholds or Thresholds())

    def __post_init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        cpu = self.sys / "devices/system/cpu"
        self._freq_files = [f for c in self.cpus
                            if (f := cpu / f"cpu{c}/cpufreq/scaling_cur_freq").exists()]
        self._throttle_files = [f for c in self.cpus for kind in ("core", "package")
                                if (f := cpu / f"cpu{c}/thermal_throttle/{kind}_throttle_count"
                                    ).exists()]
        if self.probe:
            self._calibrate()

    # -- the probe ------------------------------------------------------------------------------
    def _calibrate(self) -> None:
        n = 1000
        while True:
            t = time.perf_counter()
            _spin(n)
            if (dt := time.perf_counter() - t) >= PROBE_SPIN_S / 4 or n > 10**8:
                break
            n *= 4
        self._spins = max(int(n * PROBE_SPIN_S / max(dt, 1e-9)), 1)

    def _probe(self) -> float | None:
        """Seconds of a calibrated spin (the fastest of ``PROBE_SPINS``)."""
        if not self.probe:
            return None
        times = []
        for _ in range(PROBE_SPINS):
            t = time.perf_counter()
            _spin(self._spins)
            times.append(time.perf_counter() - t)
        return min(times)

    # -- reading /proc and /sys -----------------------------------------------------------------
    def _freq_mhz(self) -> float | None:
        khz = [int(t) for f in self._freq_files if (t := read_or_none(f)) and t.isdigit()]
        return sum(khz) / len(khz) / 1000 if khz else None

    def _throttle(self) -> int | None:
        counts = [int(t) for f in self._throttle_files if (t := read_or_none(f)) and t.isdigit()]
        return sum(counts) if counts else None

    def _neighbour(self, pid: int) -> bool:
        """Whether ``pid`` belongs to this fleet run's other nodes (the same mark in its
        environment, which only the same user can read)."""
        mark = os.environ.get(FLEET_ENV)
        if not mark:
            return False
        try:
            environ = (self.proc / str(pid) / "environ").read_bytes()
        except OSError:
            return False
        return f"{FLEET_ENV}={mark}".encode() in environ.split(b"\0")

    def _allowed(self, pid: int) -> set[int] | None:
        for line in (read_or_none(self.proc / str(pid) / "status") or "").splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return set(cpu_list(line.split(":", 1)[1]))
        return None

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(time.perf_counter(), cpu_times(self.proc, self.cpus),
                         processes(self.proc), pressure_us(self.proc), self._throttle())

    # -- the windows ----------------------------------------------------------------------------
    def begin(self) -> None:
        """Read the state at a window's start (the previous window's end state, if that was
        the last thing read: consecutive windows share their edge)."""
        self._begin_cost = 0.0
        if self._last is None:
            used = _cpu_seconds()
            self._last = self._snapshot()
            self._begin_cost = _cpu_seconds() - used
            if (probe := self._probe()) is not None:
                self._edge_speed = self._speed(probe)

    def end(self) -> WindowWatch:
        """The state at a window's end, against its start, judged."""
        used = _cpu_seconds()
        a = self._last
        assert a is not None, "end() without begin()"
        b = self._last = self._snapshot()
        cost = _cpu_seconds() - used + self._begin_cost
        probe = self._probe()
        before, after = self._edge_speed, None if probe is None else self._speed(probe)
        self._edge_speed = after
        return replace(self._judge(a, b, before, after), watcher_cpu_s=cost, probe_s=probe)

    def settle(self, window_s: float) -> float:
        """After a disturbed window: wait, reading the measured cores every ``SETTLE_STEP_S``,
        until other processes and steal are under their thresholds twice in a row, for at most
        ``SETTLE_WINDOWS`` times ``window_s`` (and at least ``SETTLE_MIN_S``), so that the window
        measured again does not meet the same disturbance; the seconds waited."""
        limit = max(SETTLE_WINDOWS * window_s, SETTLE_MIN_S)
        t0 = last_at = time.perf_counter()
        last_cpu, last_own = cpu_times(self.proc, self.cpus), self._own_ticks()
        quiet = 0
        while quiet < 2 and time.perf_counter() - t0 < limit:
            time.sleep(SETTLE_STEP_S)
            at, cpu, own = time.perf_counter(), cpu_times(self.proc, self.cpus), self._own_ticks()
            capacity = (at - last_at) * self._hz * max(len(self.cpus), 1)
            busy, steal = delta(last_cpu, cpu, BUSY), delta(last_cpu, cpu, (STEAL,))
            others = (busy - (own - last_own)) / capacity
            quiet = quiet + 1 if (others <= self.thresholds.others
                                  and steal / capacity <= self.thresholds.steal) else 0
            last_at, last_cpu, last_own = at, cpu, own
        self.forget()
        return time.perf_counter() - t0

    def _own_ticks(self) -> int:
        procs = processes(self.proc)
        return sum(procs[pid].ticks for pid in tree(procs, root_pid()) if pid in procs)

    def forget(self) -> None:
        """The next window does not follow the last one (another task, a pause between)."""
        self._last = None

    def _speed(self, probe_s: float) -> float | None:
        """The probe's speed relative to the median of this process's probes (None until it has
        run three times)."""
        self._rates.append(1.0 / probe_s)
        if len(self._rates) < 3:
            return None
        return self._rates[-1] / statistics.median(self._rates)

    def _judge(self, a: _Snapshot, b: _Snapshot, before: float | None, after: float | None
               ) -> WindowWatch:
        wall = max(b.at - a.at, 1e-9)
        capacity = wall * self._hz * max(len(self.cpus), 1)  # ticks the cores had
        busy = delta(a.cpu, b.cpu, BUSY)
        steal, iowait = delta(a.cpu, b.cpu, (STEAL,)), delta(a.cpu, b.cpu, (IOWAIT,))
        root = root_pid()
        own = tree(b.procs, root) | tree(a.procs, root)
        own_ticks = 0
        others: list[tuple[int, int]] = []
        for pid, p in b.procs.items():
            was = a.procs.get(pid)
            ticks = p.ticks - (was.ticks if was is not None and was.started == p.started else 0)
            if ticks <= 0:
                continue
            if pid in own:
                own_ticks += ticks
            else:
                others.append((ticks, pid))
        mine = set(self.cpus)
        named: list[Consumer] = []
        named_ticks = neighbour_ticks = 0
        floor = NAME_FLOOR * wall * self._hz
        for ticks, pid in sorted(others, reverse=True):
            # Where a process may run, and whose it is, is read for those that matter (the rest
            # are counted).
            allowed = self._allowed(pid) if ticks >= floor else None
            if allowed is not None and not allowed & mine:
                continue
            if ticks >= floor and self._neighbour(pid):
                neighbour_ticks += ticks
                continue
            named_ticks += ticks
            if len(named) < TOP and ticks >= floor:
                named.append(Consumer(b.procs[pid].comm, pid, ticks / (wall * self._hz)))
        other_ticks = max(named_ticks, busy - own_ticks - neighbour_ticks)
        if (rest := busy - own_ticks - neighbour_ticks - named_ticks) >= floor * 5:
            named.append(Consumer("processes that exited, interrupts", 0,
                                  rest / (wall * self._hz)))
        pressure = (None if a.pressure_us is None or b.pressure_us is None else
                    min((b.pressure_us - a.pressure_us) / 1e6 / wall, 1.0))
        throttled = None if a.throttle is None or b.throttle is None else b.throttle - a.throttle
        w = WindowWatch(
            seconds=wall, cpus=self.cpus, others=max(other_ticks, 0) / capacity,
            steal=max(steal, 0) / capacity, iowait=max(iowait, 0) / capacity, pressure=pressure,
            speed=after, freq_mhz=self._freq_mhz(), throttled=throttled, top=tuple(named),
            neighbours=neighbour_ticks / capacity)
        cause, why = self._why(w, before, after) or (None, None)
        return replace(w, disturbed=why, cause=cause)

    def _why(self, w: WindowWatch, before: float | None, after: float | None
             ) -> tuple[str, str] | None:
        if w.seconds < MIN_JUDGED_S:
            return None
        t = self.thresholds
        n = len(self.cpus)
        cores = "core" if n == 1 else f"{n} cores"
        if w.others > t.others:
            who = "; ".join(c.describe() for c in w.top) or "processes not named"
            return "others", (f"other processes took {w.others:.0%} of the measured {cores} "
                              f"(over {t.others:.0%}): {who}")
        if w.steal > t.steal:
            return "steal", (f"the hypervisor stole {w.steal:.0%} of the measured {cores}' time "
                             f"(over {t.steal:.0%})")
        if before is not None and after is not None and max(before, after) < 1 - t.slowdown:
            return "slowdown", (f"the cores ran {1 - max(before, after):.0%} slower than usual in "
                                f"this process at both ends of the window (over "
                                f"{t.slowdown:.0%}: a busy host, a lower clock)")
        return None


def _cpu_seconds() -> float:
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
