"""The machine's state: read from a made-up /sys and /proc tree (never changing the test
machine's), judged with advice, tuned and reset there; and read on this machine as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbench.errors import VisionbenchError
from visionbench.machine import GOVERNOR_TUNED, THP_TUNED, Machine, Tuner, checks

from conftest import vb


def fake_tree(root: Path, governor: str | None = "powersave", hypervisor: bool = False) -> Path:
    cpu = root / "sys/devices/system/cpu"
    for n in range(2):
        (cpu / f"cpu{n}").mkdir(parents=True)
        if governor is not None:
            (cpu / f"cpu{n}/cpufreq").mkdir()
            (cpu / f"cpu{n}/cpufreq/scaling_governor").write_text(governor + "\n")
            (cpu / f"cpu{n}/cpufreq/scaling_available_governors").write_text(
                "performance powersave\n")
            (cpu / f"cpu{n}/cpufreq/scaling_driver").write_text("acpi-cpufreq\n")
    if governor is not None:
        (cpu / "cpufreq").mkdir()
        (cpu / "cpufreq/boost").write_text("1\n")
    (cpu / "smt").mkdir()
    (cpu / "smt/control").write_text("on\n")
    (cpu / "isolated").write_text("\n")
    thp = root / "sys/kernel/mm/transparent_hugepage"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("[always] madvise never\n")
    (thp / "defrag").write_text("always defer [madvise] never\n")
    proc = root / "proc"
    proc.mkdir()
    flags = "fpu avx2" + (" hypervisor" if hypervisor else "")
    (proc / "cpuinfo").write_text(f"processor\t: 0\nmicrocode\t: 0x8001250\nflags\t\t: {flags}\n")
    (proc / "stat").write_text("cpu  10 0 0 100 0 0 0 5\ncpu0 5 0 0 50 0 0 0 3\n"
                               "cpu1 5 0 0 50 0 0 0 2\n")
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/90 1234\n")
    (proc / "pressure").mkdir()
    (proc / "pressure/cpu").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=100\n")
    return root


def test_the_state_is_read_and_judged_with_advice(tmp_path: Path) -> None:
    s = Machine(fake_tree(tmp_path)).state(sample_s=0.01)
    assert s.governors == {"powersave": 2} and s.cpufreq_driver == "acpi-cpufreq"
    assert s.boost is True and s.smt == "on" and s.thp == "always" and s.thp_defrag == "madvise"
    assert s.isolated_cpus == "" and s.hypervisor == "" and s.microcode == "0x8001250"
    assert s.load_1min == 0.5 and s.runnable == 1 and s.steal == 0.0
    assert s.steal_since_boot == pytest.approx(5 / 115)
    by = {c.name: c for c in checks(s, cpus=2)}
    assert by["governor"].verdict == "warn" and "--tune" in by["governor"].advice
    assert by["transparent huge pages"].verdict == "note"
    assert by["hypervisor"].verdict == "ok" and by["steal"].verdict == "ok"


def test_a_guest_without_cpufreq_says_what_it_hides_and_why(tmp_path: Path) -> None:
    s = Machine(fake_tree(tmp_path, governor=None, hypervisor=True)).state(sample_s=0.01)
    assert s.governors is None and s.hypervisor
    assert "frequency" in s.hidden and "nominal" in s.hidden["frequency"]
    by = {c.name: c for c in checks(s, cpus=2)}
    assert by["frequency"].verdict == "hidden" and "virtual machine" in by["frequency"].advice
    assert by["boost"].verdict == "hidden"
    changes, missing = Tuner(Machine(tmp_path), tmp_path / "saved.json").plan()
    assert any(m.startswith("governor: no cpufreq driver") for m in missing)
    assert [c.knob for c in changes] == ["transparent huge pages"]


def test_tune_then_reset_puts_back_what_was_there(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    saved = tmp_path / "cache" / "machine-tune.json"
    tuner = Tuner(Machine(root), saved)
    changes, _ = tuner.tune()
    assert {c.knob for c in changes} == {"governor", "transparent huge pages"}
    gov = root / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    thp = root / "sys/kernel/mm/transparent_hugepage/enabled"
    assert gov.read_text() == GOVERNOR_TUNED and thp.read_text() == THP_TUNED
    assert json.loads(saved.read_text())[str(gov)] == "powersave"
    assert tuner.tune()[0] == []  # tuned already: nothing to do, the saved state kept
    tuner.reset()
    assert gov.read_text() == "powersave" and thp.read_text() == "always"
    assert not saved.exists()
    with pytest.raises(VisionbenchError, match="nothing to reset"):
        tuner.reset()


def test_sysinfo_on_this_machine_reports_steal_and_pressure_and_what_it_cannot_see() -> None:
    proc = vb("sysinfo")
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "steal" in said and "CPU pressure" in said
    s = Machine().state(sample_s=0.05)
    if s.governors is None:  # this guest: no cpufreq
        assert "frequency │ not visible" in said and "nominal" in said
