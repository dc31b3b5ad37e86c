"""Every value a user can type or a file can hold, treated as hostile: extreme counts, a name too
long, bytes that are not UTF-8, non-finite and out-of-range numbers in a results file. Each is one
line on stderr and a non-zero exit, before anything is measured, or a correct result: never a
traceback, a hang or a run that cannot end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visionbench import api
from visionbench.errors import VisionbenchError

from conftest import TINY, vb

QUICK = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency"]


@pytest.mark.parametrize(("args", "message"), [
    (["--duration", "inf"], "--duration inf is more than any run could do; at most 86400"),
    (["--iterations", "99999999999999999999"], "--iterations 1e+20 is more than any run could do"),
    (["--iterations", "2", "--repeats", "5000"], "--repeats 5000 is more than any run could do"),
    (["--iterations", "2", "--threads", "99999"], "--threads 99999 is more than any run could do"),
    (["--iterations", "2", "--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["--iterations", "2", "--warmup", str(10**10)], "--warmup 1e+10 is more than any run"),
])
def test_extreme_numbers_are_one_line(tmp_path, args, message):
    out = tmp_path / "o"
    proc = vb("run", *QUICK, *args, "--output", str(out), timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert err[-1] == f"visionbench: error: {message}" or message in err[-1], err
    assert not out.exists()


def test_a_model_name_too_long_is_one_line(tmp_path):
    proc = vb("run", "--model", "m" * 5000, "--engine", "onnxruntime", "--output",
              str(tmp_path / "o"), timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "File name too long" in err[0], proc.stderr


def test_an_argument_that_is_not_utf8_is_one_line(tmp_path):
    out = os.fsencode(tmp_path) + b"/bad\xff"
    proc = subprocess.run([sys.executable, "-m", "visionbench", "run", *QUICK, "--iterations",
                           "2", "--output", out], capture_output=True, timeout=60)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "is not UTF-8 text" in err[0], err
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def a_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    proc = vb("run", *QUICK, "--iterations", "3", "--repeats", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize(("where", "value", "message"), [
    ("p50_ms", float("nan"), "a non-finite number (NaN), which visionbench never writes"),
    ("p90_ms", float("inf"), "a non-finite number (Infinity)"),
    ("mean_ms", -1e300, "measurements.0.latency.mean_ms: -1e+300 is out of range"),
    ("max_ms", 1e300, "measurements.0.latency.max_ms: 1e+300 is out of range"),
    ("p99_ms", -5.0, "measurements.0.latency.p99_ms: -5.0 is out of range"),
])
def test_a_results_file_with_numbers_visionbench_never_writes_is_one_line(a_run, tmp_path, where,
                                                                          value, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = json.loads((a_run / "results.json").read_text())
    data["measurements"][0]["latency"][where] = value
    (bad / "results.json").write_text(json.dumps(data))
    before = (bad / "results.json").read_bytes()
    for command in (["show", str(bad)], ["report", str(bad)], ["resume", str(bad)],
                    ["compare", str(a_run), str(bad), "--output", str(tmp_path / "c")]):
        proc = vb(*command, timeout=60)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr, (
            command, proc.stderr)
        assert message in err[0], (command, err[0])
    assert (bad / "results.json").read_bytes() == before


FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def _run_with(tmp_path: Path, where: tuple, value: object) -> Path:
    """A copy of the fixture run with ``value`` at ``where`` in its results.json."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    data = json.loads((run / "results.json").read_text())
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    (run / "results.json").write_text(json.dumps(data))
    return run


@pytest.mark.parametrize(("value", "found"), [("NaN", "nan"), ("-Infinity", "-inf"),
                                              ("1e999", "inf")])
def test_a_number_a_results_file_holds_as_a_string_is_checked_too(tmp_path, value, found):
    run = _run_with(tmp_path, ("measurements", 1, "latency", "p50_ms"), value)
    with pytest.raises(VisionbenchError, match=f"measurements.1.latency.p50_ms: {found} is out"):
        api.load(run)


def test_a_results_file_nested_too_deeply_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VisionbenchError, match="nested too deeply"):
        api.load(tmp_path)


def test_a_figure_of_zero_gives_no_ratio(tmp_path):
    run = _run_with(tmp_path, ("measurements", 0, "throughput_ips"), 0.0)
    cmp = api.compare([run, FIXTURE])  # the baseline says 0
    cell = next(c for (k, label), c in cmp.cells.items() if label == cmp.runs[1].label
                and k.mode == "throughput" and k.precision == "fp32")
    assert cell.speedup is None and cell.why == "no figure above 0 to compare"


def test_what_an_error_line_quotes_stays_one_line():
    proc = vb("run", "--dry-run", "--engine", "a\nb\x1b[31m\u202e", timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown engine 'a\\nb\\x1b[31m\\u202e'" in proc.stderr
