"""MLPerf scenarios through the real LoadGen, driven from the command line on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_accuracy import CATS, HAVE_EFFICIENTNET, PHOTOS, photos  # noqa: F401 - fixture

from conftest import TINY, vb

pytest.importorskip("mlperf_loadgen")
SHORT = ["--duration", "3", "--min-queries", "32"]


def _runs(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["mlperf"]


@pytest.mark.slow
def test_three_scenarios_valid_and_explained(tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32",
              "--scenario", "SingleStream,MultiStream,Offline", *SHORT, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    runs = {r["scenario"]: r for r in _runs(out)}
    assert set(runs) == {"SingleStream", "MultiStream", "Offline"}
    units = {"SingleStream": "ms", "MultiStream": "ms", "Offline": "samples/s"}
    for scenario, r in runs.items():
        assert r["status"] == "ok" and r["validity"] == "VALID", r
        assert r["failed_rules"] == [] and r["compliant"] is False  # shortened: never compliant
        assert r["unit"] == units[scenario] and np.isfinite(r["value"]) and r["value"] > 0
        assert r["min_duration_s"] == 3 and r["min_queries"] in (1, 32)
        assert r["latency_ms"]["99"] >= r["latency_ms"]["50"] > 0
        logs = out / r["log_dir"]
        assert "Result is : VALID" in (logs / "mlperf_log_summary.txt").read_text()
        assert (logs / "mlperf_log_detail.txt").stat().st_size > 1000
    assert runs["SingleStream"]["batch_sizes"] == [1] and runs["MultiStream"]["samples_per_query"] == 8
    assert 8 in runs["MultiStream"]["batch_sizes"]
    assert runs["Offline"]["chosen"]["offline_expected_qps"].endswith("minimum duration")
    # the metric is the percentile LoadGen reports for the scenario
    assert runs["SingleStream"]["value"] == runs["SingleStream"]["latency_ms"]["90"]
    assert runs["MultiStream"]["value"] == runs["MultiStream"]["latency_ms"]["99"]
    assert "MLPerf Inference scenarios" in proc.stdout
    assert "MLPerf Inference scenarios" in (out / "report.html").read_text()


@pytest.mark.slow
def test_engine_options_and_the_engine_method_reach_loadgens_system_under_test(tmp_path: Path) -> None:
    """``--streams 2 --requests 4`` compile two OpenVINO streams and keep four requests in
    flight under LoadGen (read back from OpenVINO); ``--method engine`` runs OpenVINO's own
    THROUGHPUT configuration beside the reference, a record of its own."""
    pytest.importorskip("openvino")
    out = tmp_path / "m"
    proc = vb("mlperf", *TINY, "--engine", "openvino", "--precision", "fp32", "--scenario", "Offline",
              *SHORT, "--streams", "2", "--requests", "4", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    (r,) = _runs(out)
    assert r["status"] == "ok" and r["validity"] == "VALID" and r["method"] == "reference"
    assert r["requests_in_flight"] == 4
    assert r["engine_details"]["num_streams"] == 2 and r["engine_details"]["requests_in_flight"] == 4
    out = tmp_path / "e"
    proc = vb("mlperf", *TINY, "--engine", "openvino", "--precision", "fp32", "--scenario", "Offline",
              *SHORT, "--method", "reference,engine", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    runs = {r["method"]: r for r in _runs(out)}
    assert set(runs) == {"reference", "engine"}
    assert runs["reference"]["requests_in_flight"] == 1
    engine = runs["engine"]
    assert engine["validity"] == "VALID" and engine["log_dir"].endswith("-engine")
    assert engine["engine_details"]["performance_hint"] == "THROUGHPUT"
    assert engine["requests_in_flight"] == engine["engine_details"]["optimal_number_of_infer_requests"]


@pytest.mark.slow
def test_server_within_and_over_capacity(tmp_path: Path) -> None:
    ok, over = tmp_path / "ok", tmp_path / "over"
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "Server", "--target-qps", "120", "--duration", "5", "--target-latency-ms", "50",
              "--output", str(ok))
    assert proc.returncode == 0, proc.stderr
    r = _runs(ok)[0]
    assert r["validity"] == "VALID" and r["metric"] == "scheduled queries per second", r
    assert r["target_qps"] == 120 and r["target_latency_ms"] == 50 and r["latency_ms"]["99"] <= 50
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "Server", "--target-qps", "30000", "--duration", "1", "--min-queries", "32",
              "--output", str(over))
    assert proc.returncode == 0, proc.stderr
    r = _runs(over)[0]
    assert r["validity"] == "INVALID" and r["latency_ms"]["99"] > 15
    assert any(rule.startswith("latency bound not met: p99 ") and "over the 15 ms target" in rule
               for rule in r["failed_rules"]), r["failed_rules"]
    assert "INVALID" in proc.stdout and "latency bound not met" in (over / "summary.md").read_text()


@pytest.mark.skipif(not HAVE_EFFICIENTNET, reason="needs the [efficientnet] extra")
def test_accuracy_mode_on_real_photos(photos, tmp_path: Path) -> None:  # noqa: F811
    data, cal = photos
    out = tmp_path / "acc"
    proc = vb("mlperf", "--model", "efficientnet-lite0", "--engine", "onnxruntime", "--precision",
              "fp32", "--scenario", "SingleStream", "--accuracy", "--data", str(data),
              "--calibration-data", str(cal), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = _runs(out)[0]
    assert r["mode"] == "accuracy" and r["samples"] == 5 and r["top1"] >= 0.8
    top1 = json.loads((out / r["predictions"]).read_text())["top1"]
    for path, c in top1.items():
        assert c in PHOTOS[Path(path).stem][1] or (Path(path).stem == "chelsea" and c in CATS)
    assert (out / r["log_dir"] / "mlperf_log_accuracy.json").stat().st_size > 0


def test_mlperf_bad_input(tmp_path: Path) -> None:
    for args, message in [
        (["--scenario", "Batch"], "unknown scenario 'batch'"),
        (["--scenario", "Server", "--target-qps", "0"], "--target-qps must be positive"),
        (["--scenario", "Offline", "--accuracy"], "accuracy mode needs labelled images"),
        (["--scenario", "Offline", "--user-conf", str(tmp_path / "none.conf")], "user.conf not found"),
    ]:
        proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", *args,
                  "--output", str(tmp_path / "o"))
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and message in err[0], (args, proc.stderr)


@pytest.mark.slow
def test_server_find_peak(tmp_path: Path) -> None:
    """Bisection over short runs judged by the latency bound, then a run at the peak."""
    out = tmp_path / "peak"
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "Server", "--find-peak", "--peak-steps", "4", "--duration", "2",
              "--min-queries", "32", "--target-latency-ms", "100", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = _runs(out)[0]
    steps = r["peak_steps"]
    assert len(steps) == 4 and all(s["qps"] > 0 for s in steps)
    met = [s["qps"] for s in steps if s["latency_bound_met"]]
    assert met, steps  # a tenth of the probed throughput keeps a 100 ms bound on the tiny model
    assert r["peak_qps"] == pytest.approx(max(met), rel=1e-5)
    assert r["target_qps"] == pytest.approx(r["peak_qps"], rel=1e-3)
    # each step's bound verdict agrees with its p99
    assert all(s["latency_bound_met"] == (s["p99_ms"] <= 100) for s in steps)
    assert r["metric"].startswith("peak scheduled queries per second")
    assert (out / r["log_dir"] / "peak-step-1" / "mlperf_log_summary.txt").exists()
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--scenario", "Offline", "--find-peak")
    assert proc.returncode == 2 and "give --scenario Server alone" in proc.stderr
    # a bound below one sample's own latency: no search, and the reason says so
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "Server", "--find-peak", "--target-latency-ms", "0.001", "--output", str(out / "x"))
    assert proc.returncode == 0, proc.stderr
    r = _runs(out / "x")[0]
    assert r["peak_qps"] is None and r["peak_steps"] == [] and r["validity"] is None
    assert "no QPS can keep the 0.001 ms bound: one sample alone takes" in r["reason"]


@pytest.mark.slow
def test_scenarios_beside_the_closed_loop_study(tmp_path: Path) -> None:
    """Given a study's run directory, LoadGen's results join it: one report, both kinds."""
    out = tmp_path / "study"
    proc = vb("run", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--quick",
              "--duration", "0.3", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = vb("mlperf", *TINY, "--engine", "onnxruntime", "--precision", "fp32", "--scenario",
              "SingleStream", "--duration", "2", "--min-queries", "32", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "study" and r["status"] == "complete"
    assert len(r["measurements"]) == 2 and r["mlperf"][0]["validity"] == "VALID"
    for name in ("summary.md", "report.html"):
        text = (out / name).read_text()
        assert "Throughput" in text and "Latency" in text and "MLPerf Inference scenarios" in text
    proc = vb("mlperf", "--model", "resnet50-tiny", "--seed", "5", "--engine", "onnxruntime",
              "--scenario", "SingleStream", "--output", str(out))
    assert proc.returncode == 2 and "holds a run of another model" in proc.stderr
