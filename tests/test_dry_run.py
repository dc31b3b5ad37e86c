"""``visionbench run --dry-run``: the options and the output folder checked as the run checks
them, the planned measurements printed, and nothing measured, built, created or moved."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visionbench import api
from visionbench.errors import VisionbenchError

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


def test_a_dry_run_prints_the_plan_and_creates_nothing(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    proc = subprocess.run(
        [sys.executable, "-m", "visionbench", "run", "--dry-run", "--model", "resnet50-tiny",
         "--engine", "onnxruntime", "--precision", "fp32,int8", "--mode", "latency"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "VISIONBENCH_CACHE": str(cache)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "onnxruntime-fp32-latency" in proc.stdout and "onnxruntime-int8-latency" in proc.stdout
    assert "throughput" not in proc.stdout.split("output:")[0].split("nothing measured")[1]
    assert "output: results/" in proc.stdout and "(a new run)" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] and not any(cache.iterdir())


def test_a_dry_run_refuses_what_the_run_would_refuse_leaving_it_as_found(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    before = _tree(tmp_path)
    with pytest.raises(VisionbenchError, match="already holds a run"):
        api.dry_run(engines="onnxruntime", output=run)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.md").write_text("the user's own")
    with pytest.raises(VisionbenchError, match="is not a visionbench run"):
        api.dry_run(engines="onnxruntime", output=tmp_path / "mine")
    with pytest.raises(VisionbenchError, match="unknown precision"):
        api.dry_run(engines="onnxruntime", precisions="fp64", output=tmp_path / "new")
    before["mine"] = _tree(tmp_path)["mine"]
    before["mine/summary.md"] = _tree(tmp_path)["mine/summary.md"]
    assert _tree(tmp_path) == before


def test_a_dry_run_says_what_becomes_of_the_output(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    cases = {"append": (run, "joins the run there"), "overwrite": (run, "replaces the run there")}
    for existing, (out, note) in cases.items():
        plan = api.dry_run(engines="onnxruntime", modes="latency", output=out, existing=existing)
        assert plan.output_note == note
    plan = api.dry_run(engines="onnxruntime", output=tmp_path / "mine", existing="overwrite")
    assert plan.output_note == "what it holds is moved aside"
    plan = api.dry_run(engines="onnxruntime", precisions="fp32", modes="latency",
                       output=tmp_path / "new")
    assert plan.output_note == "a new run" and not (tmp_path / "new").exists()
    assert [t.id for t in plan.tasks] == ["onnxruntime-fp32-latency"]
    assert plan.layouts == {"latency": None}
