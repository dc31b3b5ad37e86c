"""No write through a planted link: whoever can write into a shared results folder cannot make a
visionbench run truncate, overwrite or wait on a file of their choosing. The run lock and the
output's write probe never follow a link nor open a FIFO; LoadGen's logs, written by its own
code, land in a folder made for them and are renamed into place."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from visionbench.errors import VisionbenchError
from visionbench.results.policy import output_dir
from visionbench.results.rundir import LOCK_FILE, RunLock, holder

from conftest import TINY, vb


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    return victim


def test_a_linked_lock_file_is_refused_and_its_target_kept(tmp_path):
    run, victim = tmp_path / "run", _victim(tmp_path)
    run.mkdir()
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(VisionbenchError, match=r"through \.visionbench\.lock: it is a link"):
        RunLock.acquire(run, ["x"])
    assert holder(run) is None
    proc = vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
              "--iterations", "2", "--repeats", "1", "--output", str(run))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "it is a link" in err[0], proc.stderr
    assert victim.read_text() == "the user's file\n"
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_a_fifo_as_lock_file_is_refused_without_waiting(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / LOCK_FILE)
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            RunLock.acquire(run, ["x"])
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(10)
    assert outcome, "acquiring a lock on a FIFO blocked"
    assert isinstance(outcome[0], VisionbenchError) and "not a regular file" in str(outcome[0])
    assert holder(run) is None


def test_the_write_probe_creates_no_named_file(tmp_path):
    out, victim = tmp_path / "out", _victim(tmp_path)
    out.mkdir()
    (out / ".write-test").symlink_to(victim)
    os.mkfifo(out / "fifo")
    assert output_dir(out) == out
    assert victim.read_text() == "the user's file\n"
    assert sorted(p.name for p in out.iterdir()) == [".write-test", "fifo"]


def test_a_link_planted_for_a_folder_of_the_run_is_refused(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
              "--iterations", "2", "--repeats", "1", "--output", str(run)).returncode == 0
    elsewhere.mkdir()
    (run / "mlperf").symlink_to(elsewhere, target_is_directory=True)
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "SingleStream", "--short", "--output", str(run))
    assert "mlperf is a link or a file, not a folder" in " ".join(proc.stdout.split()), proc.stdout
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_loadgen_logs_replace_a_planted_link_instead_of_writing_through_it(tmp_path):
    run, victim = tmp_path / "run", _victim(tmp_path)
    assert vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
              "--iterations", "2", "--repeats", "1", "--output", str(run)).returncode == 0
    logs = run / "mlperf" / "onnxruntime-fp32-SingleStream"
    logs.mkdir(parents=True)
    (logs / "mlperf_log_summary.txt").symlink_to(victim)
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "SingleStream", "--short", "--output", str(run))
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "the user's file\n"
    summary = logs / "mlperf_log_summary.txt"
    assert not summary.is_symlink() and "Result is" in summary.read_text()
    assert not [p for p in logs.iterdir() if p.name.startswith(".loadgen-")]
