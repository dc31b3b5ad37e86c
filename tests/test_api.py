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


def test_every_api_function_is_the_packages_and_no_subpackage_shadows_one():
    """Every function of ``visionbench.api`` is reachable as ``visionbench.NAME`` and stays the
    function after every subpackage is imported (Python binds an imported subpackage's name on
    its package: no subpackage may share a name with an API function)."""
    import importlib
    import pkgutil

    from visionbench import api

    assert set(visionbench.API) == set(api.__all__)
    for info in pkgutil.walk_packages(visionbench.__path__, "visionbench."):
        if info.ispkg:
            importlib.import_module(info.name)
    for name in api.__all__:
        assert getattr(visionbench, name) is getattr(api, name), name
        assert callable(getattr(visionbench, name)), name


def test_every_command_has_its_function():
    """Each command of the command line is a function of the API (by its name, or the one named
    here where the command's name is taken or a verb)."""
    from visionbench.cli.main import cli

    named = {"show": "load", "sysinfo": "system", "engines": "list_engines", "models": "list_models",
             "cache": "cache_entries"}
    for command in cli.commands:
        assert callable(getattr(visionbench, named.get(command, command))), command


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
    heavy = [m for m in loaded if m.startswith(("visionbench.engines", "visionbench.reporting",
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
    assert "'visionbench[onnxruntime]'" in result.output  # the table may wrap after "pip install"
