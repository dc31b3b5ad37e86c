"""The machine's peak per precision: compiled, measured, cached; figures held to it."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

import visionbench
from visionbench.harness import peak as peak_mod
from visionbench.results.schema import MachinePeak, PeakRate
from visionbench.sysinfo import cpu_features

from conftest import vb

AVX2 = pytest.mark.skipif(not {"avx2", "fma"} <= cpu_features().flags,
                          reason="the peak kernels need AVX2 and FMA at least")


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, peak_mod.Peak, list[str]]:
    """A cache in which the peak was measured once (by this test module): its folder, the peak,
    what was said while measuring it."""
    cache = tmp_path_factory.mktemp("peak-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONBENCH_CACHE", str(cache))
        said: list[str] = []
        return cache, peak_mod.machine_peak(said.append), said


@AVX2
def test_the_peak_is_measured_once_and_cached(measured, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path, first, said = measured
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path))
    assert not first.cached and any("once; cached" in s for s in said)
    # FP32 and INT8 kernels exist for every AVX2 CPU; BF16 only with AVX512_BF16.
    assert {"fp32", "int8"} <= set(first.rates)
    assert ("bf16" in first.rates) == ("avx512_bf16" in cpu_features().flags)
    for r in first.rates.values():
        # GOP/s on every core: at least a core's worth of SSE, under any CPU's 2026 ceiling.
        assert math.isfinite(r.gops) and 2 <= r.gops / r.threads <= 2000
        assert len(r.windows) == peak_mod.REPEATS and r.gops == max(r.windows)
    if "bf16" not in first.rates:
        assert any("FP32's peak applies" in n for n in first.notes)
    bw = first.bandwidth
    assert bw is not None and bw.threads == first.rates["fp32"].threads
    # GB/s on every core: more than a 2010 laptop's DDR3, less than any 2026 socket's DDR5/HBM.
    assert math.isfinite(bw.gbs) and 5 <= bw.gbs <= 5000 and bw.gbs == max(bw.windows)
    assert len(bw.windows) == peak_mod.REPEATS and bw.array_mib == 256
    before = len(said)  # the measuring note, and one per window a busy machine disturbed
    cached = peak_mod.machine_peak(said.append)
    assert cached.cached and cached.rates == first.rates and len(said) == before
    assert cached.bandwidth == first.bandwidth
    assert MachinePeak.model_validate(cached.as_dict()).bandwidth.gbs == bw.gbs
    # Another CPU's (or kernels') cache is not this machine's: measured again (sysinfo --peak
    # below measures for real; here only that it is asked for).
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((tmp_path / peak_mod.CACHE_NAME).read_text())
    (other / peak_mod.CACHE_NAME).write_text(json.dumps({**data, "key": "another"}))
    monkeypatch.setenv("VISIONBENCH_CACHE", str(other))
    asked: list[str] = []
    monkeypatch.setattr(peak_mod, "measure_peak",
                        lambda key, note: asked.append(key) or peak_mod.Peak({}, key=key))
    assert not peak_mod.machine_peak().cached and asked == [data["key"]]


def test_without_a_compiler_nothing_is_measured_and_it_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    p = peak_mod.machine_peak()
    assert p.rates == {} and p.notes == (
        "peak not measured: no C compiler (no-such-cc not found; set CC) to build the peak kernels",)
    assert not (tmp_path / peak_mod.CACHE_NAME).exists()
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    assert "false could not build the peak kernels" in peak_mod.machine_peak().notes[0]


def test_a_figure_above_the_machines_peak_is_impossible(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made-up timings and a made-up peak: a figure at 4x the peak is impossible; at a quarter
    of it, it is not, and the table shows its share."""
    from visionbench.reporting.format import peak_share, share_text
    from visionbench.reporting.notices import impossible
    from visionbench.reporting.sections import sections

    monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps(
        {"ms_per_batch": 2.0, "ms_per_image": 0.0, "speedup": {"fp32": 1, "bf16": 1, "int8": 1}}))
    r = visionbench.run(model="resnet50-tiny", engines="fake", precisions="fp32,int8",
                        modes="throughput", batch_size=4, duration=0.05, repeats=2, warmup=1,
                        calibration_samples=8, isolation="none", output=tmp_path / "r")
    assert r.system.peak is not None  # recorded by the run (measured, or why not)
    ok = {m.precision: m for m in r.measurements if m.status == "ok" and m.method == "reference"}
    fp32, int8 = ok["fp32"], ok["int8"]
    rate = fp32.throughput_ips * r.model.gflop_per_image  # GFLOP/s of the made-up timings
    r.system.peak = MachinePeak(rates={
        "fp32": PeakRate(gops=rate / 4, isa="made-up FMA", threads=2),
        "int8": PeakRate(gops=int8.throughput_ips * r.model.gflop_per_image * 4, isa="made-up",
                         threads=2)})
    said = impossible(r)
    fp32_ids = {m.id for m in r.measurements if m.precision == "fp32" and m.status == "ok"}
    assert fp32.id in fp32_ids and {n.subject for n in said} <= fp32_ids and fp32.id in {
        n.subject for n in said} and said[0].level == "warning"
    assert "impossible" in said[0].text and "of this machine's FP32 peak" in said[0].text
    assert peak_share(r, fp32) == pytest.approx(4.0) and share_text(r, int8) == "25%"
    table = next(s for s in sections(r) if s.id == "throughput")
    assert "of peak" in [c.name for c in table.columns]
    shares = {row.cells[[c.name for c in table.columns].index("of peak")] for row in table.rows}
    assert {"400%", "25%"} <= shares
    r.system.peak = None  # a run from before the peak was measured: no share, no verdict
    assert share_text(r, fp32) == "—" and impossible(r) == []


@AVX2
@AVX2
def test_sysinfo_shows_the_peak(measured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(measured[0] / peak_mod.CACHE_NAME, tmp_path)
    monkeypatch.setenv("VISIONBENCH_CACHE", str(tmp_path))
    proc = vb("sysinfo")
    assert proc.returncode == 0, proc.stderr
    assert "Peak arithmetic rate" in proc.stdout and "cached, measured" in proc.stdout
    assert re.search(r"Memory bandwidth: \d+\.\d GB/s on \d+ cores \(STREAM triad", proc.stdout)
    assert "AVX2 FMA" in proc.stdout or "AVX-512 FMA" in proc.stdout  # the widest this CPU has
    again = vb("sysinfo", "--peak").stdout
    assert "measured now" in again and "Memory bandwidth:" in again
