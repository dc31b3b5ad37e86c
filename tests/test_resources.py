"""Cold start, memory and energy: the RAPL meter against a fake powercap tree (wrap-around, an
unreadable counter), the memory peak reset between measurements, and what a run records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visionbench.harness import energy
from visionbench.harness.energy import EnergyMeter
from visionbench.harness.memory import PeakMemory, rss_mib
from visionbench.harness.timing import TimingPlan, measure

from conftest import TINY, vb

RANGE = 262_143_328_850  # a real package domain's max_energy_range_uj


def _zone(path: Path, name: str, uj: int, rng: int = RANGE) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{uj}\n")
    (path / "max_energy_range_uj").write_text(f"{rng}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package about to wrap, its core (inside the package) and DRAM subzones, and psys."""
    root = tmp_path / "powercap"
    pkg = _zone(root / "intel-rapl:0", "package-0", RANGE - 1_000_000)
    _zone(pkg / "intel-rapl:0:0", "core", 10)
    _zone(pkg / "intel-rapl:0:1", "dram", 5_000_000, 65_712_999_613)
    _zone(root / "intel-rapl:1", "psys", 0)
    monkeypatch.setenv(energy.POWERCAP_ENV, str(root))
    return root


def _add(zone: Path, uj: int) -> None:
    rng = int((zone / "max_energy_range_uj").read_text())
    value = int((zone / "energy_uj").read_text()) + uj
    (zone / "energy_uj").write_text(str(value - rng if value > rng else value))


def test_packages_and_dram_are_read_and_a_wrap_is_corrected(powercap: Path):
    meter = EnergyMeter.open()
    assert meter.unavailable is None
    assert [d.name for d in meter.domains] == ["package-0", "package-0/dram"]  # core, psys left out
    start = meter.read()
    _add(powercap / "intel-rapl:0", 3_000_000)  # wraps: 1 J before the range, 2 J after
    _add(powercap / "intel-rapl:0" / "intel-rapl:0:1", 2_000_000)
    assert meter.joules(start, meter.read()) == pytest.approx({"package-0": 3.0, "package-0/dram": 2.0})


def test_energy_per_image_over_timed_windows_is_exact(powercap: Path):
    """Each batch of 4 images costs 1.5 J of package and 0.5 J of DRAM: 0.5 J per image, though
    the package counter wraps during the first window; the warm-up's energy is not counted."""
    from visionbench.scenarios.timed import Timed, energy_record

    pkg, dram = powercap / "intel-rapl:0", powercap / "intel-rapl:0" / "intel-rapl:0:1"

    def infer(x: object) -> None:
        _add(pkg, 1_500_000)
        _add(dram, 500_000)

    meter = EnergyMeter.open()
    timing = measure(infer, [None], TimingPlan(batch_size=4, warmup=3, repeats=2, iterations=10), meter=meter)
    per_window = pytest.approx({"package-0": 15.0, "package-0/dram": 5.0})
    assert [w.energy_j for w in timing.windows] == [per_window] * 2
    timed = Timed(timing, None, None, 1.0, 2.0, "test", [], [d.name for d in meter.domains], None)  # type: ignore[arg-type]
    e = energy_record(timed, images=sum(w.images for w in timing.windows))
    assert e.available and e.domains == ["package-0", "package-0/dram"]
    assert e.joules == {"package-0": 30.0, "package-0/dram": 10.0}
    assert e.joules_per_image == pytest.approx(0.5)
    assert e.watts == pytest.approx(40.0 / (sum(w.wall_ns for w in timing.windows) / 1e9))


def test_an_unreadable_counter_makes_energy_unavailable_with_the_reason(powercap: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    counter = powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj"
    real = Path.read_text

    def refuse(self: Path, *a, **k) -> str:
        if self == counter:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", refuse)
    meter = EnergyMeter.open()
    assert meter.domains == [] and meter.read() is None
    assert "not readable by this user" in meter.unavailable and str(counter) in meter.unavailable
    monkeypatch.undo()
    counter.unlink()
    counter.mkdir()  # unreadable as a file, whoever reads it (root included)
    monkeypatch.setenv(energy.POWERCAP_ENV, str(powercap))
    assert "could not be read" in EnergyMeter.open().unavailable


def test_no_powercap_tree_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(energy.POWERCAP_ENV, str(tmp_path / "none"))
    meter = EnergyMeter.open()
    assert meter.read() is None and "no powercap interface" in meter.unavailable
    timing = measure(lambda x: None, [None], TimingPlan(batch_size=1, warmup=1, repeats=1, iterations=3),
                     meter=meter)
    assert timing.windows[0].energy_j is None and timing.first_ns is not None


def test_the_memory_peak_is_reset_between_pieces_of_work():
    big = PeakMemory()
    big.start()
    block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB touched
    first = big.stop()
    del block
    small = PeakMemory()
    small.start()
    np.ones(2**20, dtype=np.uint8)
    second = small.stop()
    assert first - second > 250 and second < rss_mib() + 50
    assert "clear_refs" in big.method or "sampled" in big.method


def test_a_small_batch_after_a_large_one_does_not_inherit_its_peak(tmp_path: Path):
    out = tmp_path / "run"
    # throughput at batch 512, then batch-1 latency, in the same process
    proc = vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--batch-size", "512",
              "--iterations", "2", "--repeats", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    ms = json.loads((out / "results.json").read_text())["measurements"]
    assert [(m["mode"], m["batch_size"]) for m in ms] == [("throughput", 512), ("latency", 1)]
    big, small = ms
    assert big["memory"]["peak_mib"] > big["memory"]["prepared_mib"] > 0
    assert small["memory"]["peak_mib"] < big["memory"]["peak_mib"] - 100, (small["memory"], big["memory"])
    for m in (big, small):
        c = m["cold_start"]
        assert c["prepare_seconds"] > 0 and c["first_inference_ms"] > 0
        if EnergyMeter.open().unavailable is not None:
            assert m["energy"]["available"] is False and m["energy"]["reason"]
        else:
            assert m["energy"]["joules_per_image"] > 0
    csv = (out / "results.csv").read_text().splitlines()
    assert "memory_peak_mib" in csv[0] and len(csv) == 3


@pytest.mark.slow
def test_a_run_shows_cold_start_memory_and_energy(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "Cold start, memory and energy" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    ok = [m for m in results["measurements"] if m["status"] == "ok"]
    assert ok and all(m["memory"]["peak_mib"] >= m["memory"]["prepared_mib"] * 0.9 for m in ok)
    int8 = [m for m in ok if m["precision"] == "int8" and m["engine"] == "openvino"]
    assert int8 and any(k.startswith("OpenVINO INT8") for k in int8[0]["cold_start"]["cache"])
    assert int8[0]["cold_start"]["read_seconds"] > 0
    summary = (out / "summary.md").read_text()
    assert "## Cold start, memory and energy" in summary
    here = EnergyMeter.open()  # this machine: no powercap tree, or one root may read
    assert ("energy: unavailable" in summary) == (here.unavailable is not None)
    assert "Cold start, memory and energy" in (out / "report.html").read_text()


def _run_killing_a_worker(out: Path, *args: str, fresh: bool):
    """``visionbench run`` with ``args``, its worker killed once the first measurement is stored:
    the worker that measured it, or (``fresh``) the next one started. Its exit, stdout, stderr,
    the results and the killed worker."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "visionbench", "run", *args, "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    parent = psutil.Process(proc.pid)

    def stored() -> int:
        try:
            return len(json.loads((out / "results.json").read_text())["measurements"])
        except (OSError, ValueError):
            return 0

    def workers() -> list[psutil.Process]:
        spawned = []
        for child in parent.children():
            try:
                if "visionbench.launch.child" in child.cmdline():
                    spawned.append(child)
            except psutil.Error:
                continue
        return spawned

    deadline = time.monotonic() + 120
    first: set[int] = set()  # the workers seen before the first measurement was stored
    victim = None
    while victim is None and time.monotonic() < deadline:
        found = workers()
        if stored() < 1:
            first.update(w.pid for w in found)
        else:
            victim = next((w for w in found if not fresh or w.pid not in first), None)
        time.sleep(0.1)
    assert victim is not None, "no worker process to kill"
    victim.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    return proc, stdout, stderr, json.loads((out / "results.json").read_text()), victim


def test_each_engine_is_measured_in_a_worker_of_its_own_and_a_killed_one_fails_only_its_own(tmp_path: Path):
    """The first engine's worker is killed while it measures: its measurements fail with the
    signal, the next engine's worker measures everything; the main process wrote it all."""
    import psutil

    proc, stdout, stderr, results, worker = _run_killing_a_worker(
        tmp_path / "run", *TINY, "--engine", "onnxruntime,openvino", "--precision", "fp32",
        "--mode", "throughput,latency", "--method", "reference", "--duration", "1", "--repeats", "2",
        fresh=False)
    assert proc.returncode == 2, stderr  # some measurements failed
    ms = {m["id"]: m for m in results["measurements"]}
    assert list(ms) == ["onnxruntime-fp32-throughput", "onnxruntime-fp32-latency",
                        "openvino-fp32-throughput", "openvino-fp32-latency"]
    assert ms["onnxruntime-fp32-throughput"]["status"] == "ok"
    assert ms["onnxruntime-fp32-throughput"]["ran_in"] == "the onnxruntime worker process"
    killed = ms["onnxruntime-fp32-latency"]
    assert killed["status"] == "failed" and "killed by SIGKILL" in killed["reason"]
    assert all(ms[k]["status"] == "ok" and ms[k]["ran_in"] == "the openvino worker process"
               for k in ("openvino-fp32-throughput", "openvino-fp32-latency"))
    assert results["status"] == "failed" and "killed by SIGKILL" in stderr + stdout
    assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE


def test_each_measurement_in_a_worker_of_its_own_and_a_killed_one_fails_only_itself(tmp_path: Path):
    """``--isolation measurement``: the second measurement's worker is killed; the measurements
    after it, of the same engine, each run in a fresh worker, INT8's fidelity to FP32 included."""
    proc, stdout, stderr, results, _ = _run_killing_a_worker(
        tmp_path / "run", *TINY, "--engine", "onnxruntime", "--precision", "fp32,int8",
        "--mode", "throughput,latency", "--method", "reference", "--duration", "0.5",
        "--repeats", "2", "--isolation", "measurement", fresh=True)
    assert proc.returncode == 2, stderr
    ms = {m["id"]: m for m in results["measurements"]}
    assert list(ms) == ["onnxruntime-fp32-throughput", "onnxruntime-fp32-latency",
                        "onnxruntime-int8-throughput", "onnxruntime-int8-latency"]
    killed = ms.pop("onnxruntime-fp32-latency")
    assert killed["status"] == "failed" and "killed by SIGKILL" in killed["reason"]
    assert results["status"] == "failed" and "killed by SIGKILL" in stderr + stdout
    for m in ms.values():
        assert m["status"] == "ok" and m["ran_in"] == "a worker process of its own", m["id"]
        assert m["memory"]["prepared_mib"] > 0 and m["memory"]["peak_mib"] >= m["memory"]["prepared_mib"]
    assert all(ms[k]["fidelity"]["images"] > 0
               for k in ("onnxruntime-int8-throughput", "onnxruntime-int8-latency"))


@pytest.mark.slow
def test_mode_cold_times_fresh_processes_to_their_first_answer(tmp_path: Path):
    out = tmp_path / "cold"
    proc = vb("run", *TINY, "--engine", "onnxruntime,openvino", "--precision", "fp32,int8",
              "--mode", "cold", "--repeats", "2", "--no-cache", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Cold start in fresh processes" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["measurements"] == []
    runs = {c["engine"] + "-" + c["precision"]: c for c in results["cold"]}
    assert set(runs) == {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"}
    for c in runs.values():
        assert c["status"] == "ok" and c["processes"] == 2 and len(c["per_process"]) == 2
        ph = c["phases"]
        assert ph["total"]["median"] > ph["prepare"]["median"] > 0
        assert ph["first_inference"]["median"] > 0 and ph["start"]["median"] > 0
        assert ph["total"]["min"] <= ph["total"]["median"] <= ph["total"]["max"]
        assert c["file_cache"] == "warm" and c["peak_rss_mib"] > 50
    # --no-cache: each fresh process quantized again
    assert runs["openvino-int8"]["quantization"].startswith("re-run")
    assert any(v.startswith("built") for v in runs["openvino-int8"]["cache"].values())
    assert "read" in runs["openvino-fp32"]["phases"] and "read" not in runs["onnxruntime-fp32"]["phases"]
    assert "Cold start in fresh processes" in (out / "summary.md").read_text()


def test_cache_options_need_the_cold_mode(tmp_path: Path):
    proc = vb("run", *TINY, "--no-cache", "--output", str(tmp_path / "x"))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1 and "--mode cold" in err[0]


def test_a_worker_asks_the_main_process_for_a_fleet_barrier():
    """A study with a start hook (a fleet node's barrier) keeps it across the pickling to its
    worker, as a hook that asks the main process."""
    import pickle

    from visionbench.scenarios.study import Study

    calls = []
    hooked = pickle.loads(pickle.dumps(Study(lambda task, phase: calls.append(phase))))
    assert hooked.in_worker(lambda task, phase: 1.0).start is not None
    assert pickle.loads(pickle.dumps(Study())).in_worker(lambda task, phase: 1.0).start is None
