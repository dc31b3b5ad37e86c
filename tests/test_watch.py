"""Every window watched: what else ran on the measured cores (a made-up /proc tree, then a real
busy process), disturbed windows set aside and measured again within the allowance, the
intervals of every figure, and a whole run on the fake engine beside a busy loop."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import visionbench
from visionbench.harness.timing import Timing, TimingPlan, Window, clean, measure
from visionbench.harness.watch import Thresholds, Watcher, WindowWatch
from visionbench.launch.process import FLEET_ENV, ROOT_ENV
from visionbench.stats import latency_summary, quantile_interval, relative_halfwidth, t_interval

from conftest import vb

HZ = os.sysconf("SC_CLK_TCK")


class FakeProc:
    """A /proc tree whose counters a test moves: per-CPU times, processes, CPU pressure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cpu = {0: [0] * 8, 1: [0] * 8}
        self.procs: dict[int, dict] = {}
        self.pressure_us = 0
        self.write()

    def proc(self, pid: int, comm: str, ppid: int, ticks: int = 0, started: int = 1,
             cpus: str = "0-1", environ: str = "") -> None:
        self.procs[pid] = dict(comm=comm, ppid=ppid, ticks=ticks, started=started, cpus=cpus,
                               environ=environ)

    def advance(self, seconds: float, busy: dict[int, float], steal: float = 0.0,
                ticks: dict[int, int] | None = None) -> None:
        """``busy``: per CPU, the share of ``seconds`` it was busy; ``ticks``: per pid, CPU
        ticks it used."""
        for cpu, share in busy.items():
            self.cpu[cpu][0] += round(share * seconds * HZ)
            self.cpu[cpu][3] += round((1 - share - steal) * seconds * HZ)
            self.cpu[cpu][7] += round(steal * seconds * HZ)
        for pid, t in (ticks or {}).items():
            self.procs[pid]["ticks"] += t
        self.write()

    def write(self) -> None:
        """Every file replaced whole, as the kernel's are read: a watcher reading while a test's
        thread writes never sees one empty (zero counters would read as a quiet machine)."""
        lines = ["cpu  " + " ".join(str(sum(c[i] for c in self.cpu.values())) for i in range(8))]
        lines += [f"cpu{n} " + " ".join(map(str, c)) for n, c in self.cpu.items()]
        _put(self.root / "stat", "\n".join(lines) + "\n")
        (self.root / "pressure").mkdir(exist_ok=True)
        _put(self.root / "pressure" / "cpu",
             f"some avg10=0.00 avg60=0.00 avg300=0.00 total={self.pressure_us}\n")
        for pid, p in self.procs.items():
            d = self.root / str(pid)
            d.mkdir(exist_ok=True)
            fields = ["S", str(p["ppid"])] + ["0"] * 9 + [str(p["ticks"]), "0"] + ["0"] * 6 + [
                str(p["started"])] + ["0"] * 5
            _put(d / "stat", f"{pid} ({p['comm']}) " + " ".join(fields) + "\n")
            _put(d / "status", f"Name:\t{p['comm']}\nCpus_allowed_list:\t{p['cpus']}\n")
            _put(d / "environ", p["environ"])


def _put(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    monkeypatch.setenv(ROOT_ENV, "100")
    fp = FakeProc(tmp_path)
    fp.proc(1, "init", 0)
    fp.proc(100, "visionbench", 1)
    fp.proc(101, "python3", 100)  # a worker of visionbench's
    fp.proc(200, "pip", 1)
    fp.proc(300, "pinned-elsewhere", 1, cpus="2-3")
    return fp


def watcher(fp: FakeProc, **thresholds: float) -> Watcher:
    return Watcher((0, 1), Thresholds(**thresholds), proc=fp.root, sys=fp.root / "sys",
                   probe=False)


def window(w: Watcher, fp: FakeProc, seconds: float, **advance) -> WindowWatch:
    w.begin()
    t = time.perf_counter()
    fp.advance(seconds, **advance)
    while time.perf_counter() - t < seconds:
        time.sleep(seconds / 10)
    return w.end()


def test_other_processes_are_named_and_visionbenchs_own_are_not(fake_proc: FakeProc) -> None:
    w = watcher(fake_proc)
    # Both cores busy for 0.3 s: visionbench and its worker 0.45 s of it, pip 0.15 s.
    seen = window(w, fake_proc, 0.3, busy={0: 1.0, 1: 1.0},
                  ticks={100: round(0.15 * HZ), 101: round(0.3 * HZ), 200: round(0.15 * HZ)})
    assert seen.others == pytest.approx(0.25, abs=0.08)
    assert [c.comm for c in seen.top] == ["pip"] and seen.top[0].pid == 200
    assert seen.top[0].cores == pytest.approx(0.5, abs=0.15)
    assert seen.disturbed is not None and "pip (pid 200)" in seen.disturbed


def test_a_quiet_window_is_clean_and_steal_disturbs(fake_proc: FakeProc) -> None:
    w = watcher(fake_proc)
    quiet = window(w, fake_proc, 0.3, busy={0: 1.0, 1: 1.0}, ticks={101: round(0.6 * HZ)})
    assert quiet.others < 0.1 and quiet.disturbed is None and quiet.top == ()
    stolen = window(w, fake_proc, 0.3, busy={0: 0.7, 1: 0.7}, steal=0.3,
                    ticks={101: round(0.42 * HZ)})
    assert stolen.steal == pytest.approx(0.3, abs=0.08)
    assert "stole" in (stolen.disturbed or "")
    # The threshold is the user's.
    lenient = watcher(fake_proc, steal=0.5)
    assert window(lenient, fake_proc, 0.3, busy={0: 0.7, 1: 0.7}, steal=0.3,
                  ticks={101: round(0.42 * HZ)}).disturbed is None


def test_processes_kept_off_the_measured_cores_and_fleet_neighbours_are_not_others(
        fake_proc: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    w = watcher(fake_proc)
    seen = window(w, fake_proc, 0.3, busy={0: 0.5, 1: 0.5}, ticks={300: round(0.3 * HZ),
                                                                   101: round(0.3 * HZ)})
    assert seen.disturbed is None and all(c.pid != 300 for c in seen.top)
    monkeypatch.setenv(FLEET_ENV, "run-1")
    fake_proc.proc(400, "python3", 1, environ=f"HOME=/root\0{FLEET_ENV}=run-1\0")
    fake_proc.proc(401, "stranger", 1, environ=f"{FLEET_ENV}=run-2\0")
    w = watcher(fake_proc)
    seen = window(w, fake_proc, 0.3, busy={0: 1.0, 1: 1.0},
                  ticks={101: round(0.3 * HZ), 400: round(0.3 * HZ)})
    assert seen.neighbours == pytest.approx(0.5, abs=0.15) and seen.disturbed is None
    seen = window(w, fake_proc, 0.3, busy={0: 1.0, 1: 1.0},
                  ticks={101: round(0.3 * HZ), 401: round(0.3 * HZ)})
    assert "stranger (pid 401)" in (seen.disturbed or "")


def test_a_window_too_short_for_clock_ticks_is_recorded_not_judged(fake_proc: FakeProc) -> None:
    w = watcher(fake_proc)
    seen = window(w, fake_proc, 0.1, busy={0: 1.0, 1: 1.0}, ticks={200: 20})
    assert seen.others > 0.5 and seen.disturbed is None


def test_settle_waits_until_the_cores_are_quiet(fake_proc: FakeProc) -> None:
    """pip holds a core, then stops: the wait ends at the second quiet reading; a machine that
    stays busy is waited for up to the limit."""
    import threading

    w = watcher(fake_proc)

    def pip_then_quiet() -> None:
        for _ in range(4):
            fake_proc.advance(0.25, busy={0: 1.0, 1: 0.0}, ticks={200: 25})
            time.sleep(0.25)
        for _ in range(8):
            fake_proc.advance(0.25, busy={0: 0.0, 1: 0.0})
            time.sleep(0.25)

    busy = threading.Thread(target=pip_then_quiet)
    busy.start()
    waited = w.settle(window_s=10.0)
    busy.join()
    assert 1.0 <= waited <= 2.5, waited
    t0 = time.perf_counter()
    stop = threading.Event()

    def pip_for_ever() -> None:
        while not stop.is_set():
            fake_proc.advance(0.1, busy={0: 1.0, 1: 0.0}, ticks={200: 10})
            time.sleep(0.1)

    busy = threading.Thread(target=pip_for_ever)
    busy.start()
    try:
        waited = w.settle(window_s=0.1)  # the least wait: SETTLE_MIN_S
    finally:
        stop.set()
        busy.join()
    assert 4.9 <= waited <= 6.0 and time.perf_counter() - t0 < 7


def test_a_reused_pid_counts_as_a_new_process(fake_proc: FakeProc) -> None:
    w = watcher(fake_proc)
    fake_proc.proc(500, "old", 1, ticks=10_000, started=5)
    fake_proc.write()
    w.begin()
    fake_proc.proc(500, "new", 1, ticks=round(0.3 * HZ), started=900)  # 10_000 ticks fewer
    fake_proc.advance(0.3, busy={0: 1.0, 1: 0.0})
    time.sleep(0.3)
    seen = w.end()
    assert [c.comm for c in seen.top] == ["new"]
    assert seen.top[0].cores == pytest.approx(1.0, abs=0.3)


def _busy_loop(cpu: int) -> int:
    """A CPU-bound process pinned to ``cpu`` that is not this process's descendant (its parent
    exits at once), as a user's other program would be; its pid."""
    out = subprocess.run(
        ["sh", "-c", f"taskset -c {cpu} python3 -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True).stdout
    return int(out)


def test_a_real_busy_process_on_a_measured_core_is_named_by_its_pid() -> None:
    w = Watcher.here()
    if len(w.cpus) < 2:
        pytest.skip("needs 2 CPUs")
    pid = _busy_loop(w.cpus[-1])
    try:
        time.sleep(0.2)
        w.begin()
        t = time.perf_counter()
        while time.perf_counter() - t < 1.0:
            pass
        seen = w.end()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert seen.disturbed is not None, seen
    assert any(c.pid == pid and c.comm.startswith("python") and c.cores > 0.5 for c in seen.top)
    assert f"(pid {pid})" in seen.disturbed
    assert seen.watcher_cpu_s < 0.05 and seen.probe_s is not None and seen.probe_s < 0.05


class Scripted:
    """A watch that calls the windows whose numbers it is given disturbed."""

    thresholds = Thresholds()

    def __init__(self, disturbed: set[int], cause: str = "others") -> None:
        self.disturbed, self.n, self.cause = disturbed, 0, cause
        self.settled: list[int] = []

    def settle(self, window_s: float) -> float:
        self.settled.append(self.n)
        return 0.5

    def begin(self) -> None:
        self.n += 1

    def end(self) -> WindowWatch:
        why = "other processes took 50%" if self.n in self.disturbed else None
        return WindowWatch(0.1, (0,), 0.5 if why else 0.0, 0.0, 0.0, None, None, None, None,
                           disturbed=why, cause=self.cause if why else None)


def _windows(plan: TimingPlan, disturbed: set[int]) -> Timing:
    return measure(lambda x: None, [0], plan, watch=Scripted(disturbed))


def test_disturbed_windows_are_measured_again_within_the_allowance() -> None:
    plan = TimingPlan(batch_size=1, warmup=0, repeats=3, iterations=5, extra=3)
    watch = Scripted({2})
    t = measure(lambda x: None, [0], plan, watch=watch)
    assert len(t.windows) == 4 and [w.disturbed is None for w in t.windows] == [
        True, False, True, True]
    assert len(clean(t.windows)) == 3
    # The cores were waited for once, after the disturbed window, and the wait recorded there.
    assert watch.settled == [2] and t.windows[1].watch.waited_s == 0.5
    assert t.windows[0].watch.waited_s is None
    # The allowance spent: the figure is left with the clean windows there are.
    t = _windows(replace(plan, extra=1), {1, 2, 3, 4})
    assert len(t.windows) == 4 and clean(t.windows) == t.windows  # none clean: all kept
    t = _windows(replace(plan, extra=1), {1, 2})
    assert len(t.windows) == 4 and len(clean(t.windows)) == 2


def test_a_slow_probe_is_overruled_by_a_window_as_fast_as_the_clean_ones() -> None:
    """The probe, read at a window's edges, may find the cores slow when the window was not:
    a window only the probe called disturbed, as fast as the clean windows before it, is clean;
    one that ran slower stays disturbed. The first window, with no clean one before it, is
    measured again, and found clean at the end when it ran as fast as those after it."""
    plan = TimingPlan(batch_size=1, warmup=0, repeats=3, iterations=5, extra=3)
    watch = Scripted({1, 3, 4}, cause="slowdown")

    def infer(x: object) -> None:
        time.sleep(0.004 if watch.n == 4 else 0.001)

    t = measure(infer, [0], plan, watch=watch)
    assert [w.disturbed is None for w in t.windows] == [True, True, True, False, True]
    assert watch.settled == [1, 4]
    # Others' CPU time is seen, not inferred: never overruled.
    t = _windows(plan, {2})
    assert t.windows[1].disturbed is not None and len(t.windows) == 4


def test_until_stable_adds_windows_until_the_interval_is_narrow() -> None:
    def win(ips: float) -> Window:
        return Window(np.array([int(1e9 / ips)]), int(1e9 / ips), 1)

    plan = TimingPlan(batch_size=1, warmup=0, repeats=3, iterations=1, extra=10, until_stable=0.02)
    steady = [win(100.0), win(100.5), win(99.5)]
    noisy = [win(100.0), win(120.0), win(80.0)]
    assert not plan.more(steady) and plan.more(noisy)
    assert not plan.more(noisy * 5)  # the allowance: 3 + 10 windows
    assert plan.more(steady[:2])


def test_intervals_cover_what_they_claim() -> None:
    """The order-statistic interval of a percentile and the t interval of a mean hold their
    95% over 400 draws (binomial bounds: at least 91%)."""
    rng = np.random.default_rng(3)
    true_p90 = float(np.exp(0.3 * 1.2815515655446004))
    hits_q = hits_t = 0
    for _ in range(400):
        x = rng.lognormal(0.0, 0.3, 300)
        lo, hi = quantile_interval(np.sort(x), 0.9)
        hits_q += lo <= true_p90 <= hi
        m = t_interval(rng.normal(50.0, 3.0, 5))
        assert m is not None
        hits_t += m[0] <= 50.0 <= m[1]
    assert hits_q >= 0.91 * 400 and hits_t >= 0.91 * 400
    s = latency_summary(np.array([1e6, 2e6, 3e6, 4e6]))
    assert s.p50_ci is not None and s.p50_ci[0] <= s.p50_ms <= s.p50_ci[1]
    assert relative_halfwidth([10.0]) is None


def test_a_run_beside_a_busy_loop_names_it_and_marks_the_figure_disturbed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop holds a core for the whole run: every window is disturbed, the allowance (none
    here: waiting for quiet is tested above) runs out, and every output says so."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps({"ms_per_batch": 1.0}))
    out = tmp_path / "r"
    pid = _busy_loop(max(os.sched_getaffinity(0)))
    try:
        proc = vb("run", "--engine", "fake", "--model", "resnet50-tiny", "--precision", "fp32",
                  "--mode", "latency", "--duration", "0.3", "--repeats", "2", "--extra-windows",
                  "0", "--output", str(out))
    finally:
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())  # the console wraps its lines
    assert f"(pid {pid})" in said and "DISTURBED" in said
    (m,) = visionbench.load(out).measurements
    assert m.disturbed and m.clean_windows == 0 and len(m.windows) == 2
    assert all(w.disturbed and any(c.pid == pid for c in w.top) for w in m.windows)
    assert any(w.startswith("disturbed: 0 of 2 windows clean") for w in m.warnings)
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["disturbed"] == "True" and row["clean_windows"] == "0" and row["windows"] == "2"
    assert "DISTURBED" in (out / "summary.md").read_text()
    assert "DISTURBED" in (out / "report.html").read_text()


def test_a_speedup_beyond_what_the_cpu_allows_is_called_implausible(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made-up timings: INT8 8x faster than FP32 on a CPU whose instructions allow 3x without
    VNNI (5x with) is implausible, the likelier disturbed side named; 2x is not."""
    from visionbench.reporting.notices import notices, speedup_ceiling

    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps(
        {"ms_per_batch": 2.0, "ms_per_image": 0.0, "speedup": {"fp32": 1, "bf16": 2, "int8": 40}}))
    r = visionbench.run(model="resnet50-tiny", engines="fake", precisions="fp32,int8",
                        modes="latency", duration=0.05, repeats=2, warmup=1, calibration_samples=8,
                        isolation="none", output=tmp_path / "r")
    ceiling = speedup_ceiling("int8", set(r.system.isa_flags))
    assert ceiling in (3.0, 5.0, 10.0)
    said = [n for n in notices(r) if n.text.startswith("implausible")]
    assert len(said) == 1 and said[0].subject == "fake-int8-latency" and said[0].level == "warning"
    assert f"above the {ceiling:g}x" in said[0].text and "likelier disturbed side" in said[0].text
    assert speedup_ceiling("bf16", {"avx512_bf16"}) == 2.5
    assert speedup_ceiling("bf16", {"avx512_bf16", "amx_bf16"}) == 8.0
