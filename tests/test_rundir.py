"""A run is never lost: an output holding a run is refused unless --append or --overwrite, one
writer per run directory, SIGTERM and SIGHUP kept as Ctrl-C is, and resume after any stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visionbench.config import RunConfig
from visionbench.results import load
from visionbench.results.rundir import LOCK_FILE, RunLock, holder, move_aside

from conftest import TINY, vb

#: One quick latency measurement of the tiny model.
QUICK = [*TINY, "--engine", "onnxruntime", "--mode", "latency", "--iterations", "3",
         "--repeats", "1", "--warmup", "1"]

SWEEP = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--iterations", "3",
         "--repeats", "1", "--batch-sizes", "1"]


def _twice(out: Path, second: str) -> dict:
    """An FP32 run into ``out``, then an INT8 one with ``second``; the run's results."""
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(out)).returncode == 0
    proc = vb("run", *QUICK, "--precision", "int8", "--output", str(out), second)
    assert proc.returncode == 0, proc.stderr
    return _results(out)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _text(proc: subprocess.CompletedProcess) -> str:
    """What the command printed, its lines joined as the console wrapped them."""
    return " ".join(proc.stdout.split())


def _one_line(proc: subprocess.CompletedProcess, message: str) -> str:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in err[0], err[0]
    return err[0]


def test_an_output_holding_a_run_is_refused_and_the_run_kept(tmp_path):
    out = tmp_path / "r"
    first = vb("run", *QUICK, "--precision", "fp32", "--output", str(out))
    assert first.returncode == 0, first.stderr
    before = (out / "results.json").read_text()
    line = _one_line(vb("run", *QUICK, "--precision", "int8", "--output", str(out)),
                     "already holds a run (study, 1 record, complete")
    assert "--append" in line and "--overwrite" in line
    assert (out / "results.json").read_text() == before
    # sweep and tune refuse it the same way
    _one_line(vb("sweep", *SWEEP, "--output", str(out)), "already holds a run")
    _one_line(vb("tune", *TINY, "--engine", "onnxruntime", "--budget", "5s", "--output", str(out)),
              "already holds a run")
    assert (out / "results.json").read_text() == before


def test_append_adds_records_and_replace_measures_one_again(tmp_path):
    out = tmp_path / "r"
    data = _twice(out, "--append")
    assert [m["id"] for m in data["measurements"]] == ["onnxruntime-fp32-latency",
                                                       "onnxruntime-int8-latency"]
    assert data["status"] == "complete"
    assert [i["how"] for i in data["invocations"]] == ["new", "append"]
    assert [i["config"]["precisions"] for i in data["invocations"]] == [["fp32"], ["int8"]]
    assert "--append" in data["invocations"][1]["command"]
    assert all(i["status"] == "complete" for i in data["invocations"])

    # a record already there is refused, unless --replace
    _one_line(vb("run", *QUICK, "--precision", "fp32", "--output", str(out), "--append"),
              "already holds onnxruntime-fp32-latency; --replace")
    first = data["measurements"][0]
    again = vb("run", *QUICK, "--precision", "fp32", "--output", str(out), "--append", "--replace")
    assert again.returncode == 0, again.stderr
    data = _results(out)
    assert [m["id"] for m in data["measurements"]] == ["onnxruntime-fp32-latency",
                                                       "onnxruntime-int8-latency"]
    assert data["measurements"][0]["raw_latencies"] == first["raw_latencies"]
    assert data["measurements"][0]["latency"] != first["latency"]
    _one_line(vb("run", *QUICK, "--precision", "fp32", "--output", str(tmp_path / "x"),
                 "--replace"), "--replace replaces measurements of the run it appends to")


@pytest.mark.slow  # four runs end to end (12 s)
def test_append_refuses_another_machine_model_or_kind(tmp_path):
    out = tmp_path / "r"
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(out)).returncode == 0
    data = _results(out)
    data["system"]["cpu_model"] = "Imaginary CPU 9000"
    data["system"]["isa_flags"] = ["sse2"]
    (out / "results.json").write_text(json.dumps(data))
    line = _one_line(vb("run", *QUICK, "--precision", "int8", "--output", str(out), "--append"),
                     "was measured on another machine")
    assert "cpu_model: Imaginary CPU 9000 there" in line and "isa_flags: 1 ISA flags there" in line

    other = tmp_path / "o"
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(other)).returncode == 0
    _one_line(vb("run", *QUICK, "--precision", "fp32", "--model", "resnet50-tiny", "--seed", "1",
                 "--output", str(other), "--append"), "holds a run of another model")
    _one_line(vb("sweep", *SWEEP, "--output", str(other), "--append"),
              "holds a study run; a sweep cannot join it")


def test_overwrite_moves_the_old_run_aside_until_the_new_one_has_a_measurement(tmp_path):
    out = tmp_path / "r"
    data = _twice(out, "--overwrite")
    assert [m["precision"] for m in data["measurements"]] == ["int8"]
    assert data["invocations"][0]["how"] == "overwrite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the old run is gone now

    # a new run that ends before its first measurement puts the old one back
    from visionbench.results import Results, RunStore

    aside = move_aside(out)
    out.mkdir()
    new = Results.model_validate({**data, "measurements": [], "invocations": []})
    store = RunStore(out, new, RunLock.acquire(out, ["test"]), aside)
    store.finish("interrupted")
    assert _results(out)["measurements"] == data["measurements"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    lock = RunLock.acquire(out, ["visionbench", "run", "--output", str(out)])
    try:
        assert holder(out)["pid"] == os.getpid()
        line = _one_line(vb("run", *QUICK, "--precision", "fp32", "--output", str(out)),
                         "is being written by another visionbench")
        assert f"pid {os.getpid()} on " in line and "visionbench run --output" in line
        assert not (out / "results.json").exists()
    finally:
        lock.release()
    assert holder(out) is None
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(out)).returncode == 0


def _start(out: Path, *args: str) -> subprocess.Popen:
    """A run of two measurements of several seconds each (long enough that a second writer's
    refusal, a process start of its own, ends well before the second is done, on a slow host
    too), started in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "visionbench", "run", *TINY, "--engine", "onnxruntime",
         "--precision", "fp32,int8", "--mode", "latency", "--duration", "2", "--repeats", "4",
         "--output", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _after_first_measurement(out: Path) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if _results(out)["measurements"]:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("no measurement within 180 s")


@pytest.mark.slow
def test_sigterm_and_sighup_keep_the_measurements_and_resume_finishes_the_run(tmp_path):
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        out = tmp_path / sig.name
        proc = _start(out)
        _after_first_measurement(out)
        # a second writer meanwhile is refused, naming the first
        line = _one_line(vb("run", *QUICK, "--precision", "fp32", "--output", str(out)),
                         "is being written by another visionbench")
        assert f"pid {proc.pid} " in line
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        assert f"stopped by {sig.name}" in err and "Traceback" not in err
        data = _results(out)
        assert data["status"] == "interrupted"
        assert [m["id"] for m in data["measurements"]] == ["onnxruntime-fp32-latency"]

    resumed = vb("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 2 planned records to measure; missing: onnxruntime-int8-latency" in _text(resumed)
    data = _results(out)
    assert data["status"] == "complete"
    assert [(m["id"], m["resumed"]) for m in data["measurements"]] == [
        ("onnxruntime-fp32-latency", False), ("onnxruntime-int8-latency", True)]
    assert [i["how"] for i in data["invocations"]] == ["new", "resume"]
    assert data["invocations"][1]["resumed"] == ["onnxruntime-int8-latency"]
    assert (out / "raw" / "onnxruntime-int8-latency.json").exists()


@pytest.mark.slow
def test_a_killed_run_ends_without_finishing_and_resume_completes_it(tmp_path):
    out = tmp_path / "r"
    proc = _start(out)
    _after_first_measurement(out)
    proc.kill()
    proc.wait(timeout=60)
    assert _results(out)["status"] == "running"
    shown = vb("show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "status: ended without finishing (the process stopped at " in _text(shown)
    assert load(out).state.startswith("ended without finishing")

    resumed = vb("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    data = _results(out)
    assert data["status"] == "complete"
    assert sorted(m["id"] for m in data["measurements"]) == ["onnxruntime-fp32-latency",
                                                             "onnxruntime-int8-latency"]
    assert "nothing to resume" in _text(vb("resume", str(out)))


def test_resume_measures_a_failed_measurement_again(tmp_path):
    out = tmp_path / "r"
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(out)).returncode == 0
    data = _results(out)
    data["measurements"][0].update(status="failed", reason="RuntimeError: the engine crashed",
                                   latency=None)
    data["status"] = "failed"
    (out / "results.json").write_text(json.dumps(data))
    assert vb("show", str(out)).returncode == 0
    resumed = vb("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "failed: onnxruntime-fp32-latency" in _text(resumed)
    data = _results(out)
    assert data["status"] == "complete"
    [m] = data["measurements"]
    assert m["status"] == "ok" and m["resumed"] and m["latency"]["p50_ms"] > 0


def test_resume_finishes_a_sweep(tmp_path):
    out = tmp_path / "s"
    sweep = [*SWEEP[:-1], "1,2"]
    assert vb("sweep", *sweep, "--output", str(out)).returncode == 0
    data = _results(out)
    assert [m["id"] for m in data["measurements"]] == ["onnxruntime-fp32-throughput-b1",
                                                       "onnxruntime-fp32-throughput-b2"]
    data["measurements"].pop()
    data["status"] = "interrupted"
    (out / "results.json").write_text(json.dumps(data))
    resumed = vb("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "missing: onnxruntime-fp32-throughput-b2" in _text(resumed)
    data = _results(out)
    assert data["kind"] == "sweep" and data["status"] == "complete"
    assert [m["resumed"] for m in data["measurements"]] == [False, True]


def test_resume_refuses_what_it_cannot_finish(tmp_path):
    _one_line(vb("resume", str(tmp_path / "none")), "does not exist")
    out = tmp_path / "t"
    (out / "raw").mkdir(parents=True)
    run = tmp_path / "r"
    assert vb("run", *QUICK, "--precision", "fp32", "--output", str(run)).returncode == 0
    data = _results(run)
    data["kind"] = "tune"
    (out / "results.json").write_text(json.dumps(data))
    _one_line(vb("resume", str(out)), "is a tune run, which is not resumed: its search adapts")


def test_a_recorded_configuration_is_planned_again_as_it_was(tmp_path):
    from visionbench import api

    cfg = api.study_config(engines="onnxruntime", precisions="fp32,int8", modes="throughput",
                           model="resnet50-tiny", batch_size=8, duration=2.0, repeats=4,
                           threads=1, calibration_samples=16, data=tmp_path, streams=None,
                           sessions=2, output=tmp_path / "a")
    again = RunConfig.from_record(cfg.as_dict(), tmp_path / "a")
    assert again.as_dict() == cfg.as_dict()
    assert again.study.engine_options == {"sessions": 2}


def test_the_lock_file_is_released_when_its_holder_dies(tmp_path):
    code = ("import sys, time; from pathlib import Path; "
            "from visionbench.results.rundir import RunLock; "
            f"lock = RunLock.acquire(Path({str(tmp_path)!r}), ['x']); print('locked', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert holder(tmp_path)["pid"] == proc.pid
    proc.kill()
    proc.wait()
    assert holder(tmp_path) is None and (tmp_path / LOCK_FILE).exists()


@pytest.mark.slow  # three runs and a resume, end to end (28 s)
def test_an_append_into_an_interrupted_run_leaves_it_interrupted_until_resumed(tmp_path):
    """Also: the report of a run still being written is refused."""
    out = tmp_path / "r"
    proc = _start(out)
    _after_first_measurement(out)
    _one_line(vb("report", str(out)), "is being written by another visionbench")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert _results(out)["status"] == "interrupted"
    appended = vb("run", *QUICK, "--precision", "fp32", "--mode", "throughput", "--batch-size",
                  "2", "--output", str(out), "--append")
    assert appended.returncode == 0, appended.stderr
    assert "1 record(s) an earlier command planned are still missing (onnxruntime-int8-latency)" \
        in _text(appended)
    data = _results(out)
    assert data["status"] == "interrupted"
    assert data["invocations"][0]["planned"] == ["onnxruntime-fp32-latency",
                                                 "onnxruntime-int8-latency"]
    assert vb("resume", str(out)).returncode == 0
    assert _results(out)["status"] == "complete"
