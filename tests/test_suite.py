"""`visionbench suite` end to end on the reduced workloads: one run of kind suite, every
measurement carrying its model, lower precisions their fidelity, the geometric means and scores,
the figures and report; bad input in one line."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from visionbench.results import load as load_results
from visionbench.results.suite import geomean, suite_rows

from conftest import vb

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="the workloads are built with PyTorch")]

# One workload per task (each tiny workload is checked on every engine in test_workloads.py).
TINY = "resnet50-tiny,ssd-mobilenet-tiny,deeplabv3-tiny"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "s"
    proc = vb("suite", "--workloads", TINY, "--engine", "openvino", "--precision", "fp32,int8",
              "--quick", "--duration", "0.2", "--calibration-samples", "8", "--output", str(out),
              timeout=600)
    return proc, out


def test_suite_runs_every_workload_into_one_run(suite_run):
    proc, out = suite_run
    assert proc.returncode == 0, proc.stderr
    results = load_results(out)
    assert results.kind == "suite" and results.suite_version == 1
    names = TINY.split(",")
    assert [m.name for m in results.models] == names
    assert {m.task for m in results.models} == {"classification", "detection", "segmentation"}
    ms = results.measurements
    assert {m.model for m in ms} == set(names)
    assert len({m.id for m in ms}) == len(ms) == len(names) * 2 * 2
    assert all(m.id.startswith(f"{m.model}-") for m in ms)
    for m in ms:
        assert m.status == "ok", (m.id, m.reason)
        assert m.throughput_ips and math.isfinite(m.throughput_ips)
        if m.precision == "int8":
            assert m.fidelity is not None and m.fidelity.outputs
            assert all(o.rel_error >= 0 for o in m.fidelity.outputs)
        else:
            assert m.fidelity is None
    # Detector and segmenter outputs are all compared.
    det = next(m for m in ms if m.model == "ssd-mobilenet-tiny" and m.precision == "int8")
    assert [o.output for o in det.fidelity.outputs] == ["boxes", "scores"]


def test_suite_summary_is_the_geometric_mean(suite_run):
    _, out = suite_run
    results = load_results(out)
    rows = {(r.engine, r.precision): r for r in suite_rows(results)}
    fp32 = rows[("openvino", "fp32")]
    tput = [m.throughput_ips for m in results.measurements
            if m.precision == "fp32" and m.mode == "throughput"]
    p50 = [m.latency.p50_ms for m in results.measurements
           if m.precision == "fp32" and m.mode == "latency"]
    assert fp32.workloads == 3 and not fp32.missing
    assert fp32.throughput_geomean == pytest.approx(geomean(tput))
    assert fp32.score == pytest.approx(math.sqrt(geomean(tput) * 1000 / geomean(p50)))
    assert fp32.speedup_vs_fp32 == pytest.approx(1.0)
    assert rows[("openvino", "int8")].speedup_vs_fp32 > 0


def test_suite_writes_tables_figures_and_report(suite_run):
    proc, out = suite_run
    for table in ("Suite: classification", "Suite: detection", "Suite: segmentation",
                  "Suite summary"):
        assert table in proc.stdout
    for name in ("throughput.png", "latency.png", "summary.md", "report.html"):
        assert (out / name).stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "Suite summary" in html and "Vision suite (3 workloads)" in html
    md = (out / "summary.md").read_text()
    assert "| ssd-mobilenet-tiny | openvino | int8 |" in md


def test_suite_runs_compare(suite_run, tmp_path):
    _, out = suite_run
    proc = vb("compare", str(out), str(out), "--output", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "deeplabv3-tiny" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--workloads", "nope"], "unknown workload 'nope'"),
    (["--model", "resnet50-tiny"], "--model is for visionbench run"),
])
def test_suite_bad_input_is_one_line(tmp_path, args, message):
    proc = vb("suite", *args, "--quick", "--output", str(tmp_path / "o"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_suite_results_json_lists_its_workloads(suite_run):
    _, out = suite_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["workloads"] == TINY.split(",")
    assert doc["invocations"][0]["kind"] == "suite"


def test_quick_runs_retinanet_at_512_and_says_so():
    from visionbench.config import RunConfig
    from visionbench.scenarios.suite import WORKLOADS, stand_ins

    names, notes = stand_ins(list(WORKLOADS))
    assert names == [("retinanet-512" if n == "retinanet" else n) for n in WORKLOADS]
    assert len(notes) == 1 and "retinanet is measured as retinanet-512" in notes[0]
    suite_quick = RunConfig.of(engines=["openvino"], quick=True, suite=True)
    assert suite_quick.plan("fp32", "throughput", 2).duration == 0.5
    assert RunConfig.of(engines=["openvino"], suite=True).plan("fp32", "latency").warmup == 5
