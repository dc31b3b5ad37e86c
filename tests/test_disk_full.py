"""A full disk, a name too long: one line naming the path and the cause, what was measured
kept, no temporary file left. The full disks are size-limited tmpfs mounts (root only)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import TINY, leftovers, vb


def test_a_disk_full_of_raw_latencies_is_one_line_and_keeps_the_run(small_disk):
    out = small_disk / "run"
    proc = vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
              "--duration", "3", "--repeats", "2", "--warmup", "1", "--output", str(out))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(err) == 1 and "No space left on device" in err[0], proc.stderr
    assert str(out) in err[0]
    data = json.loads((out / "results.json").read_text())
    assert data["status"] == "failed"
    assert not leftovers(out)


@pytest.mark.slow  # OpenVINO's INT8 quantization, end to end (15 s)
@pytest.mark.parametrize("small_disk", [64 * 1024], indirect=True)
def test_a_cache_disk_full_during_openvino_int8_is_one_line_and_leaves_nothing(
        small_disk, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    model = tmp_path / "tiny.onnx"
    assert vb("export", "--model", "resnet50-tiny", "--output", str(model)).returncode == 0
    cache = small_disk / "cache"
    monkeypatch.setenv("VISIONBENCH_CACHE", str(cache))
    out = tmp_path / "run"
    proc = vb("run", "--model", str(model), "--calibration-samples", "8", "--engine", "openvino",
              "--precision", "int8", "--mode", "latency", "--iterations", "2", "--repeats", "1",
              "--output", str(out))
    assert "Traceback" not in proc.stderr, proc.stderr
    [m] = json.loads((out / "results.json").read_text())["measurements"]
    assert m["status"] == "failed"
    assert "OpenVINO could not write the INT8 model into" in m["reason"] and "MiB free" in m["reason"]
    assert not leftovers(cache)


def test_an_output_name_too_long_is_one_line(tmp_path):
    out = tmp_path / ("x" * 300)
    proc = vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--mode", "latency",
              "--iterations", "2", "--output", str(out))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "File name too long" in err[0], proc.stderr
    assert os.listdir(tmp_path) == []
