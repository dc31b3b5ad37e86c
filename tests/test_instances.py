"""Pinned instances: layouts, pinning read back from the running children, aggregation, and a
crashed instance reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

from visionbench.engines import SessionSpec
from visionbench.errors import VisionbenchError
from visionbench.harness.instances import (
    InstanceFailed,
    combined_throughput,
    custom_layout,
    pinning,
    reference_layout,
    run_instances,
)
from visionbench.harness.timing import Timing, Window
from visionbench.sysinfo import numa_cores

from conftest import TINY

TWO_CORES = pytest.mark.skipif(len(numa_cores()[0]) < 2, reason="needs two physical cores")


def test_reference_layouts() -> None:
    two_nodes = [list(range(0, 8)), list(range(8, 16))]
    t = reference_layout("throughput", two_nodes)
    assert t.cores == (tuple(range(8)), tuple(range(8, 16))) and t.describe() == "2 x 8"
    lat = reference_layout("latency", two_nodes)
    assert lat.describe() == "4 x 4" and lat.cores[2] == (8, 9, 10, 11)
    assert "4 cores" in lat.reason and "fewer" not in lat.reason
    small = reference_layout("latency", [[0, 1]])
    assert small.describe() == "1 x 2"
    assert "2 physical cores per NUMA node" in small.reason and "1 instance of 2 cores" in small.reason
    assert reference_layout("latency", [[0, 1, 2, 3, 4, 5]]).describe() == "1 x 4"


def test_custom_layouts() -> None:
    nodes = [[0, 1, 2], [3, 4, 5]]
    assert custom_layout(2, None, nodes).cores == ((0, 1, 2), (3, 4, 5))
    assert custom_layout(None, 1, nodes).describe() == "6 x 1"
    spans = custom_layout(3, 2, nodes)
    assert spans.cores[1] == (2, 3) and "1 instance span NUMA nodes" in spans.reason
    with pytest.raises(VisionbenchError, match="3 instances of 3 cores need 9 physical cores; "
                                               "this machine has 6"):
        custom_layout(3, 3, nodes)
    with pytest.raises(VisionbenchError, match="7 instances of 1 core need 7"):
        custom_layout(7, None, nodes)


def _timing(per_window: list[tuple[int, float]]) -> Timing:
    """Windows of ``n`` single-image calls over ``seconds`` each."""
    return Timing(0, [Window(np.full(n, 1000, dtype=np.int64), int(s * 1e9), 1)
                      for n, s in per_window])


def test_aggregation_sums_instances_per_repeat() -> None:
    a = _timing([(100, 1.0), (90, 1.0)])
    b = _timing([(50, 0.5), (80, 1.0), (70, 1.0)])  # a third repeat the other lacks is dropped
    assert combined_throughput([a, b]) == [200.0, 170.0]


def crash_in_one(index: int, barrier: Callable[[], None]) -> int:
    """Instance 1 fails before the barrier; the others would wait there."""
    if index == 1:
        raise RuntimeError("instance one cannot start")
    barrier()
    return index


def pinned_cpus(index: int, barrier: Callable[[], None]) -> list[int]:
    barrier()
    return sorted(os.sched_getaffinity(0))


def numa_policy(index: int, barrier: Callable[[], None]) -> str:
    barrier()
    return subprocess.run(["numactl", "--show"], capture_output=True, text=True, check=True).stdout


@TWO_CORES
@pytest.mark.skipif(shutil.which("numactl") is None, reason="numactl is not installed")
def test_numactl_on_several_nodes() -> None:
    """With several NUMA nodes (here two one-core nodes, as the launcher is told), each instance
    starts under numactl: local memory policy, its own core."""
    cores = numa_cores()[0][:2]
    nodes = [[cores[0]], [cores[1]]]
    layout = reference_layout("throughput", nodes)
    assert layout.describe() == "2 x 1" and pinning(nodes).startswith("numactl")
    done = run_instances("test_instances:numa_policy", [0, 1], layout, nodes)
    for d in done:
        assert "policy: local" in d.value
        assert f"physcpubind: {d.cores[0]} " in d.value + " " and d.affinity == list(d.cores)


@TWO_CORES
def test_launcher_pins_and_reports_failures() -> None:
    layout = custom_layout(2, 1, numa_cores())
    done = run_instances("test_instances:pinned_cpus", [0, 1], layout, numa_cores())
    for d in done:
        assert d.affinity == list(d.cores) == d.value
    with pytest.raises(InstanceFailed, match=r"instance 1 \(cores .*\) failed before timing: "
                                             "RuntimeError: instance one cannot start"):
        run_instances("test_instances:crash_in_one", [0, 1], layout, numa_cores())


@TWO_CORES
def test_instances_run_pinned_and_summed(tmp_path: Path) -> None:
    from visionbench.config import RunConfig
    from visionbench.reporter import Reporter
    from visionbench.scenarios.study import run

    cfg = RunConfig.of(engines=["onnxruntime"], precisions=["fp32"], modes=["throughput"],
                    model="resnet50-tiny", batch_size=4, iterations=30, repeats=2, warmup=2,
                    instances=2, output=tmp_path / "r")
    m = run(cfg, Reporter(), ["test"]).results.measurements[0]
    assert m.status == "ok" and m.instances == 2 and m.cores_per_instance == 1 and m.threads == 1
    assert [i.affinity for i in m.per_instance] == [i.cores for i in m.per_instance]
    assert {c for i in m.per_instance for c in i.cores} == set(numa_cores()[0][:2])
    for r in range(2):
        assert m.throughput_per_repeat[r] == pytest.approx(
            sum(i.throughput_per_repeat[r] for i in m.per_instance))
    assert m.latency is not None and m.latency.count == 2 * 2 * 30
    assert all(i.latency.count == 60 and np.isfinite(i.latency.p99_ms) for i in m.per_instance)
    raw = json.loads((tmp_path / "r" / m.raw_latencies).read_text())["windows"]
    assert len(raw) == 4 and all(len(w) == 30 for w in raw)
    assert any("2 x 1 (instances x cores" in w for w in m.warnings)
    from visionbench.reporting import write_report
    from visionbench.results import load

    write_report(load(tmp_path / "r"), tmp_path / "r")
    for name in ("summary.md", "report.html"):
        text = (tmp_path / "r" / name).read_text()
        assert "Pinned instances" in text and "affinity read back" in text
    assert "4 (2x1 cores)" in (tmp_path / "r" / "summary.md").read_text()


def _instance_pids(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in parent.children(recursive=True)
                if "VISIONBENCH_INSTANCE" in p.environ()]
    except psutil.Error:
        return []


@pytest.mark.slow
@TWO_CORES
def test_killed_instance_fails_the_measurement(tmp_path: Path) -> None:
    """A user's view: one instance dies mid-run; that measurement fails with the signal, the
    other instance is stopped, and the run's other measurements are still made and kept."""
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionbench", "run", *TINY, "--engine", "onnxruntime",
         "--precision", "fp32", "--batch-size", "2", "--instances", "2", "--duration", "5",
         "--repeats", "1", "--warmup", "1", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(children := _instance_pids(parent)) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "instances never started"
        time.sleep(0.2)
    time.sleep(2)  # both at or past the barrier
    victim = children[1]
    victim.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "some measurements failed" in err
    results = json.loads((out / "results.json").read_text())
    by_mode = {m["mode"]: m for m in results["measurements"]}
    assert by_mode["throughput"]["status"] == "failed"
    assert "killed by SIGKILL" in by_mode["throughput"]["reason"]
    assert by_mode["latency"]["status"] == "ok"  # the run went on
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)


def test_engine_native_parallelism(tiny, tiny_inputs: np.ndarray) -> None:
    """OpenVINO compiles streams and keeps its optimal requests of the full batch in flight, the
    hint's choices read back; ONNX Runtime runs sessions at once on a share of the threads each;
    the logits are the same. ORT inter-op threads run in parallel mode. All recorded."""
    from visionbench.data.calibration import synthetic_calibration
    from visionbench.engines import get_engine
    from visionbench.harness.timing import TimingPlan, measure_async

    cal = synthetic_calibration(tiny, 8)
    x = tiny_inputs[:8]
    ov = get_engine("openvino")
    one = ov.prepare(SessionSpec(tiny, "fp32", 2, cal, 8))
    assert one.requests == 1 and one.execution.details["api"] == "sync"
    two = ov.prepare(SessionSpec(tiny, "fp32", 2, cal, 7, {"streams": 2}))  # any batch: no split
    d = two.execution.details
    assert d["num_streams"] == 2 and d["static_input_shape"][0] == 7
    assert two.requests == d["requests_in_flight"] == d["optimal_number_of_infer_requests"] == 2
    np.testing.assert_allclose(two.predict(x[:7]), one.predict(x)[:7], rtol=1e-4, atol=1e-5)
    t = measure_async(two.start, two.requests, [two.feed(x[:7])],
                      TimingPlan(batch_size=7, warmup=1, repeats=2, iterations=5))
    assert t.warmup_calls == 2 and [w.images for w in t.windows] == [35, 35]
    deep = ov.prepare(SessionSpec(tiny, "fp32", 2, cal, 8, {"streams": 2, "requests": 4}))
    assert deep.requests == deep.execution.details["requests_in_flight"] == 4
    hinted = ov.prepare(SessionSpec(tiny, "fp32", 2, cal, 8, {"hint": "throughput"}))
    d = hinted.execution.details
    assert d["performance_hint"] == "THROUGHPUT" and d["num_streams"] >= 1
    assert hinted.requests == d["optimal_number_of_infer_requests"]
    assert {"enable_cpu_pinning", "inference_num_threads", "scheduling_core_type"} <= set(d)
    np.testing.assert_allclose(hinted.predict(x), one.predict(x), rtol=1e-4, atol=1e-5)
    for s in (one, two, deep, hinted):
        s.close()
    ort = get_engine("onnxruntime")
    both = ort.prepare(SessionSpec(tiny, "fp32", 2, cal, 8, {"sessions": 2}))
    d = both.execution.details
    assert both.requests == d["sessions"] == 2 and d["threads_per_session"] == 1
    assert d["intra_op_num_threads"] == 1
    t = measure_async(both.start, both.requests, [both.feed(x)],
                      TimingPlan(batch_size=8, warmup=1, repeats=1, iterations=4))
    assert [w.images for w in t.windows] == [32] and len(t.windows[0].latencies_ns) == 4
    np.testing.assert_allclose(both.predict(x), one.predict(x), rtol=1e-4, atol=1e-5)
    both.close()
    par = ort.prepare(SessionSpec(tiny, "fp32", 1, cal, 8, {"inter_op_threads": 2}))
    assert par.execution.details["execution_mode"] == "parallel"
    assert par.execution.details["inter_op_num_threads"] == 2
    np.testing.assert_allclose(par.predict(x), one.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_parallelism_errors() -> None:
    from conftest import vb

    for args, message in [
        (["--engine", "onnxruntime", "--streams", "2", "--mode", "throughput"],
         "onnxruntime has no --streams"),
        (["--engine", "openvino", "--inter-op-threads", "2"], "openvino has no --inter-op-threads"),
        (["--engine", "onnxruntime", "--requests", "2"], "onnxruntime has no --requests"),
        (["--engine", "openvino", "--sessions", "2"], "openvino has no --sessions"),
        (["--engine", "openvino", "--requests", "0"], "--requests must be a positive integer"),
        (["--engine", "openvino", "--method", "fastest"], "unknown method 'fastest'"),
        (["--layout", "latency", "--instances", "2"], "give --layout or --instances"),
        (["--instances", "64"], "64 instances of 1 core need 64 physical cores"),
    ]:
        proc = vb("run", *TINY, "--quick", *args)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and message in err[0], (args, proc.stderr)
