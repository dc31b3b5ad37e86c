"""A folder is visionbench's only if it says so: an --output holding anything but a run is
refused (left exactly as found) unless --overwrite, for run, compare and export alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbench.results.rundir import LOCK_FILE

from conftest import TINY, vb

QUICK = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
         "--iterations", "2", "--repeats", "1", "--warmup", "1"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the run lock's (its holder's details)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def _one_line(proc, message: str) -> None:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in err[0], err[0]


def test_a_folder_of_the_users_is_refused_as_output_and_left_as_found(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes")
    (mine / "results.csv").write_text("a,b\n1,2\n")
    before = _snapshot(mine)
    _one_line(vb("run", *QUICK, "--output", str(mine)),
              "is not a visionbench run and holds 2 thing(s) (results.csv, summary.md)")
    assert _snapshot(mine) == before and not (mine / LOCK_FILE).exists()
    proc = vb("run", *QUICK, "--output", str(mine), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (mine / "summary.md").read_text() != "my notes"
    assert json.loads((mine / "results.json").read_text())["status"] == "complete"
    assert not [p for p in tmp_path.iterdir() if ".overwritten-" in p.name]


def test_a_refused_run_output_keeps_no_lock(tmp_path):
    out = tmp_path / "run"
    assert vb("run", *QUICK, "--output", str(out)).returncode == 0
    (out / LOCK_FILE).unlink()
    before = _snapshot(out)
    _one_line(vb("run", *QUICK, "--output", str(out)), "already holds a run")
    assert _snapshot(out) == before and not (out / LOCK_FILE).exists()


@pytest.mark.slow  # compare and export end to end (10 s)
def test_compare_and_export_replace_nothing_unless_told(tmp_path):
    run = tmp_path / "run"
    assert vb("run", *QUICK, "--output", str(run)).returncode == 0
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line(vb("compare", str(run), str(run), "--output", str(out)),
              "already holds 1 thing(s) (notes.txt)")
    assert _snapshot(out) == {"notes.txt": b"mine"}
    proc = vb("compare", str(run), str(run), "--output", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (out / "compare.json").exists() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if ".overwritten-" in p.name]

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"my own model")
    _one_line(vb("export", "--model", "resnet50-tiny", "--output", str(onnx)),
              "already exists; give another --output, or --overwrite")
    assert onnx.read_bytes() == b"my own model"
    proc = vb("export", "--model", "resnet50-tiny", "--output", str(onnx), "--overwrite")
    assert proc.returncode == 0 and onnx.stat().st_size > 1000, proc.stderr


def test_an_overwritten_run_returns_when_its_replacement_is_killed_before_a_record(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    assert vb("run", *QUICK, "--output", str(out)).returncode == 0
    old = json.loads((out / "results.json").read_text())
    slow = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
            "--duration", "60", "--repeats", "1", "--warmup", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "visionbench", "run", *slow, "--output",
                             str(out), "--overwrite"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if ".overwritten-" in p.name]:
        assert time.monotonic() < deadline and proc.poll() is None, "the run never moved aside"
        time.sleep(0.1)
    while not (out / "results.json").exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    shown = vb("show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "put back the run that --overwrite had moved aside" in " ".join(shown.stdout.split())
    assert json.loads((out / "results.json").read_text())["created_at"] == old["created_at"]
    assert not [p for p in tmp_path.iterdir() if ".overwritten-" in p.name]


def test_a_report_never_lands_in_the_run_that_replaced_its_own(tmp_path):
    import pytest

    from visionbench import api
    from visionbench.errors import VisionbenchError

    out = tmp_path / "run"
    first = api.run(model="resnet50-tiny", engines="onnxruntime", precisions="fp32",
                    modes="latency", iterations=2, repeats=1, output=out)
    assert vb("run", *QUICK, "--output", str(out), "--overwrite").returncode == 0
    replaced = _snapshot(out)
    with pytest.raises(VisionbenchError, match="now holds another run"):
        api.report(first)
    assert _snapshot(out) == replaced
