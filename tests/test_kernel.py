"""The kernel on the fake engine (``visionbench.testing.fake_engine``): the driver, worker
isolation, failures kept as results, resume, compare's verdicts and the renderers, in seconds,
with no engine runtime loaded. The fake engine sleeps a set time per batch, so the harness can
never report it faster than that."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import visionbench
from visionbench.results import load

from conftest import vb

FAST = {"model": "resnet50-tiny", "engines": "fake", "duration": 0.05, "repeats": 2, "warmup": 1,
        "calibration_samples": 8}


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
    # The console, summary.md and report.html render the same sections, with the same columns.
    from rich.console import Console

    from visionbench.reporting.console import print_summary
    from visionbench.reporting.sections import sections

    console = Console(record=True, width=300)
    print_summary(console, r)
    text = console.export_text()
    built = sections(r)
    assert [s.id for s in built] == ["throughput", "latency", "cold-start"]
    for s in built:
        header = " | ".join(c.name for c in s.columns)
        assert s.title in text and s.title in md and f">{s.title}</h2>" in html
        assert f"| {header} |" in md and all(c.name in text for c in s.columns)
        assert html.count("<th>") >= len(s.columns)


def test_tune_within_budget_and_bound(tmp_path: Path, fake) -> None:
    """The search stays within its budget, names only settings whose p99 meets the bound, confirms
    them round by round beside the default, and gives the command that re-runs the winner; where
    no setting kept the bound (a busy host can push any p99 past it), it says so truthfully. The
    fake engine's calls take 1 ms + 0.5 ms per image at FP32 (a third of it at INT8), so the
    25 ms bound sits far above the small batches (1.5 ms at batch 1) and far below batch 116
    (59 ms): no speed is asserted, only what the search did with the latencies it measured."""
    import time

    fake(ms_per_batch=1.0, ms_per_image=0.5)
    out, budget, bound = tmp_path / "tune", 16.0, 25.0
    t0 = time.monotonic()
    proc = vb("tune", "--model", "resnet50-tiny", "--calibration-samples", "8", "--engine", "fake",
              "--precision", "fp32,int8", "--budget", f"{budget:g}s", "--max-latency-ms", f"{bound}",
              "--output", str(out))
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "tune" and len(r["tune"]) == 2
    # the search itself; start-up, model and INT8 preparation come on top
    assert sum(t["seconds_used"] for t in r["tune"]) <= budget * 1.15 + 2
    assert wall < budget + 60
    by_id = {m["id"]: m for m in r["measurements"]}
    assert any(t["status"] == "ok" for t in r["tune"]), r["tune"]
    for t in r["tune"]:
        confirm = [m for m in r["measurements"] if m["precision"] == t["precision"]
                   and m["phase"] == "confirm"]

        def p99(setting_id: str, confirm: list = confirm) -> float:  # median of its rounds' p99
            tag, method = setting_id.split("-confirm1-")[1], by_id[setting_id]["method"]
            return float(np.median([m["latency"]["p99_ms"] for m in confirm
                                    if m["id"].endswith(f"-{tag}") and m["method"] == method]))

        if t["status"] == "none-within-bound":  # true of every setting confirmed
            assert t["winner"] is None and f"no setting kept p99 within {bound} ms" in t["reason"]
            assert not any(c["within_bound"] for c in t["confirmed"])
            firsts = [m for m in confirm if "-confirm1-" in m["id"]]
            assert firsts and all(p99(m["id"]) > bound for m in firsts)
            continue
        assert t["status"] == "ok", t
        w, d = by_id[t["winner"]], by_id[t["default"]]
        assert w["phase"] == d["phase"] == "confirm" and w["repeats"] == d["repeats"] == 1
        assert t["rounds"] >= 3
        # the fake engine's own configuration (two sessions at once) is the default to beat
        assert d["batch_size"] == 116 and d["method"] == "engine"
        assert t["default_setting"]["method"] == d["method"]
        assert len(confirm) == t["rounds"] * len(t["confirmed"])
        for c in t["confirmed"]:  # each setting once per round; ratios to the default per round
            assert len(c["ips"]) == len(c["ratios"]) == t["rounds"]
            assert c["median_ratio"] == pytest.approx(np.median(c["ratios"]))
        assert t["confirmed"][0]["ratios"] == [1.0] * t["rounds"]
        assert t["default_within_bound"] is (p99(t["default"]) <= bound)
        assert p99(t["winner"]) <= bound
        best = max((c for c in t["confirmed"] if c["within_bound"]), key=lambda c: c["median_ratio"])
        assert t["winner_setting"]["batch_size"] == best["batch_size"] == w["batch_size"]
        assert t["speedup_vs_default"] == pytest.approx(best["median_ratio"])
        explored = [m for m in r["measurements"] if m["precision"] == t["precision"]
                    and m["phase"] == "explore" and m["status"] == "ok"]
        assert t["explored"] >= len(explored) >= 2
        assert f"--batch-size {w['batch_size']}" in t["winner_command"]
        assert t["winner_command"].startswith("visionbench run --engine fake")
    assert "Tuned settings" in proc.stdout and "Re-run fake" in proc.stdout
    assert "Tuned settings" in (out / "report.html").read_text()


def test_files_written_before_concurrency_was_typed_read_it_from_the_engines_words() -> None:
    """A measurement and a tuned setting stored with OpenVINO's own keys (before 0.2) load with
    the typed concurrency and options the report reads."""
    from visionbench.reporting.format import batch_text, setting_text
    from visionbench.results.schema import Measurement, TuneOutcome

    m = Measurement.model_validate({
        "id": "openvino-fp32-throughput-engine", "engine": "openvino", "precision": "fp32",
        "mode": "throughput", "batch_size": 116, "threads": 2, "status": "ok", "support": "native",
        "engine_details": {"num_streams": 2, "requests_in_flight": 4}, "started_at": "x",
        "finished_at": "x"})
    assert (m.concurrency.executors, m.concurrency.in_flight) == (2, 4)
    assert batch_text(m) == "116 (2 streams, 4 requests)"
    t = TuneOutcome.model_validate({
        "engine": "openvino", "precision": "int8", "status": "ok",
        "winner_setting": {"batch_size": 64, "threads": 2, "method": "engine", "streams": 2,
                           "requests": 4}})
    assert t.winner_setting["options"] == {"streams": 2, "requests": 4}
    assert setting_text(t.winner_setting) == "batch 64, 2 threads, engine method, 2 streams, 4 requests"
    # the process environment a winner needs is in its words (it once read as the plain setting)
    env = {"allocator": "tcmalloc", "omp_runtime": "intel", "env": {"KMP_BLOCKTIME": "1"}}
    assert setting_text({"batch_size": 32, "threads": 2, "environment": env}) \
        == "batch 32, 2 threads, tcmalloc, Intel OpenMP, KMP_BLOCKTIME=1"
    assert setting_text({"batch_size": 32, "threads": 2, "environment": {
        "allocator": "glibc", "omp_runtime": "shipped", "env": {}}}).endswith("a fresh process as shipped")


NEW_KIND = '''
class Probe(BaseModel):
    """A toy record kind: one declaration (and its type) is all a new kind needs."""

    name: str
    status: str = "ok"

    @property
    def key(self) -> str:
        return f"probe-{self.name}"


'''

CHECK_NEW_KIND = '''
import json, shutil, sys
from pathlib import Path
from visionbench.results import RunStore, load
from visionbench.results.kinds import Probe
run = Path(sys.argv[1])
results = load(run)
RunStore(run, results).add(Probe(name="a"))
again = load(run)
assert [p.name for p in again.probes] == ["a"], again.probes
assert again.records()["probe-a"] == "ok"
assert json.loads((run / "results.json").read_text())["probes"] == [{"name": "a", "status": "ok"}]
from visionbench.reporting.html import report_html
from visionbench.reporting.markdown import summary_markdown
md, html = summary_markdown(again), report_html(again, {})
assert "## Toy probes" in md and "| probe-a | a | ok |" in md, md
assert '<h2 id="probes">Toy probes</h2>' in html and "<td>probe-a</td>" in html
print("ok")
'''


def test_a_new_record_kind_is_one_declaration(tmp_path: Path) -> None:
    """Declared in results/kinds.py alone, a new kind's records are stored by the store's one
    ``add``, listed by ``Results.records()``, written to results.json under its field and shown
    in summary.md and report.html as a section of their own."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root / "src" / "visionbench", src / "visionbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    kinds = src / "visionbench" / "results" / "kinds.py"
    text = kinds.read_text()
    text = text.replace("\n\nKINDS: tuple[RecordKind, ...] = (\n",
                        NEW_KIND + "KINDS: tuple[RecordKind, ...] = (\n"
                        '    RecordKind("probes", Probe, "toy probes"),\n', 1)
    kinds.write_text(text)
    run = tmp_path / "run"
    shutil.copytree(root / "tests" / "fixtures" / "run-0.1.0", run)
    proc = subprocess.run([sys.executable, "-c", CHECK_NEW_KIND, str(run)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(src)}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_a_toy_scenario_is_its_module_an_api_function_and_a_command(tmp_path: Path, fake) -> None:
    """tests/toy_scenario.py adds a scenario as docs/contributing.md says (its module, an API
    function, a CLI command): its records reach results.json, summary.md and report.html."""
    from click.testing import CliRunner

    import toy_scenario  # noqa: F401 - registers the command
    from visionbench.cli.main import cli
    from visionbench.results.compare import compare

    out = tmp_path / "toy"
    try:
        result = CliRunner().invoke(cli, ["toy", "--model", "resnet50-tiny", "--engine", "fake",
                                          "--precision", "fp32,int8", "--calibration-samples", "8",
                                          "--duration", "0.05", "--repeats", "2", "--output",
                                          str(out)])
    finally:  # the toy is no command of visionbench's for the tests that follow
        cli.commands.pop("toy")
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "results.json").read_text())
    ids = sorted(m["id"] for m in stored["measurements"])
    assert ids == ["fake-fp32-throughput-toy", "fake-int8-throughput-toy"]
    assert all(m["batch_size"] == 3 and m["status"] == "ok" for m in stored["measurements"])
    md, html = (out / "summary.md").read_text(), (out / "report.html").read_text()
    for m in load(out).measurements:
        shown = f"{m.throughput_ips:.1f}"
        assert shown in md and shown in html, m.id
    assert compare([out, out]).cells  # the other commands read its run as any other
