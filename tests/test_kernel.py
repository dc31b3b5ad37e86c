"""The kernel on the fake engine (``visionbench.testing.fake_engine``): the driver, worker
isolation, failures kept as results, resume, compare's verdicts and the renderers, in seconds,
with no engine runtime loaded. The fake engine sleeps a set time per batch, so the harness can
never report it faster than that."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import visionbench
from visionbench.results import load

FAST = {"model": "resnet50-tiny", "engines": "fake", "duration": 0.05, "repeats": 2, "warmup": 1,
        "calibration_samples": 8}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """Sets the fake engine's settings (``Settings`` fields) for this test and its workers."""

    def settings(**values: object) -> None:
        monkeypatch.setenv("VISIONBENCH_FAKE_ENGINE", json.dumps(values))

    settings()
    return settings


def test_the_driver_measures_every_task_and_stores_each_record(tmp_path: Path, fake) -> None:
    fake(ms_per_batch=1.0, ms_per_image=0.02)
    r = visionbench.run(**FAST, isolation="none", output=tmp_path / "r")
    assert r.status == "complete" and r.kind == "study"
    ids = {m.id for m in r.measurements}
    assert ids == {f"fake-{p}-{mode}{suffix}" for p in ("fp32", "bf16", "int8")
                   for mode, suffix in (("throughput", ""), ("throughput", "-engine"), ("latency", ""))}
    speedup = {"fp32": 1.0, "bf16": 2.0, "int8": 3.0}
    for m in r.measurements:
        assert m.status == "ok" and m.executed_precision == m.precision and m.ran_in == "the main process"
        # A call sleeps at least its set time: no figure may beat it (the harness counts every
        # image once); two sessions at once (the engine method) at most double it.
        floor_s = (1.0 + 0.02 * m.batch_size) / speedup[m.precision] / 1e3
        ceiling = m.batch_size / floor_s * (2 if m.method == "engine" else 1)
        assert 0 < m.throughput_ips <= ceiling * 1.02, m.id
        assert m.latency.p50_ms >= floor_s * 1e3 * 0.98, m.id
        if m.precision != "fp32":
            assert m.fidelity is not None and m.fidelity.images > 0
    stored = load(tmp_path / "r")
    assert [m.id for m in stored.measurements] == [m.id for m in r.measurements]
    assert all((tmp_path / "r" / m.raw_latencies).is_file() for m in stored.measurements)


def test_a_worker_process_finds_the_fake_engine(tmp_path: Path, fake) -> None:
    r = visionbench.run(**FAST, precisions="fp32", modes="latency", output=tmp_path / "r")
    (m,) = r.measurements
    assert m.status == "ok" and m.ran_in == "the fake worker process"


def test_a_failing_engine_is_a_failed_record_and_resume_finishes_the_run(tmp_path: Path, fake) -> None:
    fake(fail_after=1)  # every session fails on its second call (warm-up or timed)
    out = tmp_path / "r"
    r = visionbench.run(**FAST, precisions="fp32,int8", modes="latency", isolation="none", output=out)
    assert r.status == "failed"
    for m in r.measurements:
        assert m.status == "failed" and "the fake engine failed after 1 calls" in m.reason
    fake()
    again = visionbench.resume(out)
    assert again.status == "complete"
    assert {m.id: (m.status, m.resumed) for m in again.measurements} == {
        "fake-fp32-latency": ("ok", True), "fake-int8-latency": ("ok", True)}
    assert [i.how for i in again.history()] == ["new", "resume"]


def test_compare_calls_a_twice_slower_run_slower(tmp_path: Path, fake) -> None:
    opts = {**FAST, "precisions": "fp32", "modes": "throughput", "methods": "reference",
            "batch_size": 8, "repeats": 3, "isolation": "none"}
    fake(ms_per_batch=2.0, ms_per_image=0.1)
    visionbench.run(**opts, output=tmp_path / "a")
    fake(ms_per_batch=4.0, ms_per_image=0.2)
    visionbench.run(**opts, output=tmp_path / "b")
    cmp = visionbench.compare([tmp_path / "a", tmp_path / "b"])
    (cell,) = [c for c in cmp.cells.values() if c.run != cmp.baseline]
    assert cell.verdict == "slower" and cell.speedup < 0.75 and cell.p_value < 0.05
    written = {p.name for p in visionbench.write_comparison(cmp, tmp_path / "cmp")}
    assert {"compare.md", "compare.html", "compare.json"} <= written
    assert "slower" in (tmp_path / "cmp" / "compare.md").read_text()


def test_the_renderers_show_every_measurement(tmp_path: Path, fake) -> None:
    r = visionbench.run(**FAST, precisions="fp32,int8", isolation="none", output=tmp_path / "r")
    written = {p.name for p in visionbench.report(r)}
    assert {"summary.md", "report.html", "throughput.png", "latency.png"} <= written
    md = (tmp_path / "r" / "summary.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    for m in r.measurements:
        shown = f"{m.throughput_ips:.1f}"
        assert shown in md and shown in html, m.id
    # Every row of every table has a cell under each header (the throughput table's "fidelity to
    # FP32" column once had none), and each lower precision's fidelity is in both tables.
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
        assert len(widths) == 1, table[:300]
    for m in r.measurements:
        if m.precision == "int8":
            snr = f"{min(o.snr_db for o in m.fidelity.outputs):.1f} dB"
            assert html.count(snr) >= 1 and md.count(snr) >= 1, m.id
    throughput_table = html[html.index('id="throughput"'):html.index('id="latency"')]
    assert " dB" in throughput_table
