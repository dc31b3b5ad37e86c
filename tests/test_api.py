"""The public Python API, results written before this version, and literal console text."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import visionbench
from visionbench.errors import VisionbenchError

from conftest import vb

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def test_run_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = visionbench.run(model="resnet50-tiny", engines=["onnxruntime"], precisions=["fp32"],
                        modes=["latency"], iterations=20, output="run-x")
    assert r.status == "complete" and r.kind == "study"
    assert r.directory == Path("run-x") and (tmp_path / "run-x" / "results.json").is_file()
    (m,) = r.measurements
    assert (m.engine, m.precision, m.mode, m.model) == ("onnxruntime", "fp32", "latency", "resnet50-tiny")
    assert m.timed_iterations == 20 * m.repeats
    assert math.isfinite(m.latency.p50_ms) and 0 < m.latency.p50_ms < 1000
    assert r.command[0].startswith("visionbench.run(model='resnet50-tiny'")
    again = visionbench.load("run-x")
    assert again.measurements[0].latency == m.latency and again.directory == Path("run-x")
    assert {p.name for p in visionbench.report(again)} >= {"report.html", "summary.md"}


def test_api_names_stay_functions_beside_their_subpackages():
    """``visionbench.report`` and ``visionbench.fleet`` are subpackages as well as functions:
    importing the subpackages (as the first ``visionbench.report(run)`` does) must not rebind the
    package's names, or a second call would call a module."""
    import visionbench.fleet.driver
    from visionbench import api
    from visionbench.report.fleet import fleet_markdown

    assert callable(fleet_markdown)
    assert visionbench.report is api.report and visionbench.fleet is api.fleet


def test_api_bad_input_is_one_error():
    with pytest.raises(VisionbenchError, match="unexpected keyword argument 'batchsize'"):
        visionbench.run(model="resnet50-tiny", engines="onnxruntime", batchsize=4)
    with pytest.raises(VisionbenchError, match="unknown precision 'fp8'"):
        visionbench.run(model="resnet50-tiny", engines="onnxruntime", precisions="fp8")
    with pytest.raises(VisionbenchError, match="unknown scenario"):
        visionbench.mlperf("Sideways", engines="onnxruntime")


def test_importing_the_results_store_imports_no_engine_or_report():
    code = ("import sys, visionbench.results, visionbench.results.compare, visionbench.results.fleet;"
            "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    heavy = [m for m in loaded if m.startswith(("visionbench.engines", "visionbench.report",
                                                 "visionbench.scenarios", "visionbench.api",
                                                 "onnxruntime", "openvino", "torch", "tensorflow",
                                                 "matplotlib"))]
    assert heavy == []


def test_results_written_before_this_version_still_load(tmp_path):
    old = visionbench.load(FIXTURE)
    assert old.software["visionbench"] == "0.1.0" and old.status == "complete"
    assert old.system.cpu_model and old.config.threads >= 1 and old.config.engines == ["onnxruntime"]
    assert all(m.model is None and m.method == "reference" for m in old.measurements)
    assert {old.key(m).model for m in old.measurements} == {"resnet50-tiny"}
    proc = vb("show", str(FIXTURE))
    assert proc.returncode == 0, proc.stderr
    assert "Throughput (images/s" in proc.stdout and "onnxruntime" in proc.stdout
    copy = tmp_path / "old"
    shutil.copytree(FIXTURE, copy)
    proc = vb("report", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert (copy / "report.html").stat().st_size > 1000
    proc = vb("compare", str(FIXTURE), str(copy), "--output", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "within noise" in (tmp_path / "cmp" / "compare.md").read_text()


def test_install_hints_are_printed_literally(monkeypatch):
    """rich must not take ``[onnxruntime]`` in "pip install 'visionbench[onnxruntime]'" for markup."""
    from visionbench.cli import cli
    from visionbench.engines.onnxruntime import OnnxRuntimeEngine

    monkeypatch.setattr(OnnxRuntimeEngine, "installed", classmethod(lambda cls: False))
    result = CliRunner().invoke(cli, ["engines"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "pip install 'visionbench[onnxruntime]'" in result.output
