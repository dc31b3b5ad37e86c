"""Batch-size sweeps and the tuner, driven as a user would from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import TINY, vb


def test_sweep_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = vb("sweep", *TINY, "--engine", "onnxruntime", "--precision", "fp32,int8",
              "--batch-sizes", "4,1,2", "--iterations", "8", "--repeats", "2", "--warmup", "1",
              "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "sweep"
    ms = r["measurements"]
    assert [(m["precision"], m["batch_size"]) for m in ms] == [
        ("fp32", 1), ("fp32", 2), ("fp32", 4), ("int8", 1), ("int8", 2), ("int8", 4)]
    assert len({m["id"] for m in ms}) == 6 and ms[0]["id"] == "onnxruntime-fp32-throughput-b1"
    for m in ms:
        assert m["status"] == "ok" and m["mode"] == "throughput"
        assert np.isfinite(m["throughput_ips"]) and m["throughput_ips"] > 0
        assert m["latency"]["count"] == 16 and m["latency"]["p99_ms"] >= m["latency"]["p50_ms"] > 0
    for name in ("throughput.png", "latency.png", "throughput.svg", "latency.svg"):
        assert (out / name).stat().st_size > 1000
    md = (out / "summary.md").read_text()
    assert "Throughput and latency by batch size" in md and "Latency (batch size 1" not in md
    # INT8 is compared with FP32 at the same batch size
    rows = [ln.split("|") for ln in md.splitlines() if ln.startswith("| onnxruntime | int8 | 2 |")]
    fp32_b2 = next(m for m in ms if m["precision"] == "fp32" and m["batch_size"] == 2)
    int8_b2 = next(m for m in ms if m["precision"] == "int8" and m["batch_size"] == 2)
    assert rows[0][6].strip() == f"{int8_b2['throughput_ips'] / fp32_b2['throughput_ips']:.2f}x"
    html = (out / "report.html").read_text()
    assert 'id="fig-throughput"' in html and 'id="fig-latency"' in html
    assert "best" in html and "at batch" in html


def test_sweep_bad_input() -> None:
    for args, message in [
        (["--batch-sizes", "1,x"], "--batch-sizes takes a comma list of integers"),
        (["--batch-sizes", "0,2"], "--batch-sizes must be positive integers, got 0"),
        (["--batch-sizes", "1,100000"], "batch size 100000 is absurd"),
    ]:
        proc = vb("sweep", *TINY, "--engine", "onnxruntime", *args)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and message in err[0], (args, proc.stderr)
