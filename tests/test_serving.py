"""Served inference: ``visionbench serve`` (the tiny model behind KServe's Python model server on
loopback) loaded by ``visionbench loadtest`` over HTTP and gRPC, as a user runs them in two
shells; the sweep's points, intervals and knee; a server killed mid-sweep; bad input in one line.
The end-to-end tests start a server (about 10 s) and are under the slow marker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import vb, vb_many, vb_serve

pytest.importorskip("tritonclient.http", reason="pip install 'visionbench[serve]'")

from visionbench.errors import VisionbenchError
from visionbench.results import load
from visionbench.results.schema import LoadPoint
from visionbench.serving.client import endpoint, error_kind
from visionbench.serving.loadtest import mark_knee
from visionbench.stats import latency_summary


def test_urls_are_a_protocol_a_host_and_a_port() -> None:
    assert endpoint("http://127.0.0.1:8080").address == "127.0.0.1:8080"
    assert endpoint("grpc://[::1]:9000").url == "grpc://[::1]:9000"
    for bad in ("ftp://h:1", "http://h", "http://h:99999", "http://h:1/v2", "grpc://:5"):
        with pytest.raises(VisionbenchError, match="give http://HOST:PORT or grpc://HOST:PORT"):
            endpoint(bad)


def test_errors_are_counted_by_kind() -> None:
    from tritonclient.utils import InferenceServerException

    assert error_kind(InferenceServerException("boom", status="500")) == "http 5xx"
    assert error_kind(InferenceServerException("no", status="404")) == "http 4xx"
    assert error_kind(InferenceServerException("x", status="StatusCode.UNAVAILABLE")) == \
        "grpc UNAVAILABLE"
    assert error_kind(InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED")) == \
        "timeout"
    assert error_kind(asyncio.TimeoutError()) == "timeout"
    assert error_kind(ConnectionRefusedError()) == "refused"
    assert error_kind(OSError("Cannot connect to host 127.0.0.1:1")) == "refused"


def _point(users: int, ips: float, p99_ms: float) -> LoadPoint:
    lat = latency_summary(np.full(100, p99_ms * 1e6))
    return LoadPoint(url="http://h:1", protocol="http", model="m", concurrency=users,
                     status="ok", window_s=1.0, throughput_ips=ips, latency=lat,
                     started_at="x", finished_at="x")


def test_the_knee_is_the_fastest_point_within_twice_the_one_user_p99() -> None:
    points = [_point(1, 100, 10), _point(2, 180, 15), _point(4, 230, 19.9), _point(8, 260, 45)]
    assert mark_knee(points) is points[2] and [p.knee for p in points] == [0, 0, 1, 0]
    failed = LoadPoint(url="http://h:1", protocol="http", model="m", concurrency=16,
                       status="failed", window_s=1.0, started_at="x", finished_at="x")
    assert mark_knee([*points, failed]) is points[2] and not failed.knee


def test_servers_loaded_together_have_a_row_each_and_their_sum() -> None:
    from visionbench.reporting.sections import loadtest as section

    urls = ["grpc://10.0.0.2:1", "grpc://10.0.0.3:1"]
    points = []
    for users in (1, 2):
        for n, (url, ips) in enumerate(zip(urls, (100.0, 60.0 * users), strict=True)):
            p = _point(users, ips, 10)
            p.url, p.protocol, p.together = url, "grpc", urls
            p.server = {"node": f"node-{n}"}
            points.append(p)
    assert len({p.key for p in points}) == 4 and points[0].key.endswith("-c1-at-10-0-0-2-1")
    assert _point(1, 1, 1).key == "loadtest-http-m-c1"  # one server: the key as before
    (sec,) = section(SimpleNamespace(loadtest=points))
    cells = [r.cells for r in sec.rows]
    assert [c[1] for c in cells] == ["m @ node-0", "m @ node-1", "m: all 2 servers"] * 2
    assert [c[3] for c in cells if "all" in c[1]] == ["160.0", "220.0"]


def test_server_facts_are_matched_by_url_and_an_unnamed_server_is_one_line() -> None:
    from visionbench.serving.loadtest import _facts_for

    one = {"http": "http://127.0.0.1:1", "grpc": "grpc://127.0.0.1:2", "engine": "openvino"}
    cluster = {"servers": [{**one, "node": "a"}, {"http": "http://10.0.0.3:1",
                                                   "grpc": "grpc://10.0.0.3:2", "node": "b"}]}
    assert _facts_for(endpoint("grpc://10.0.0.3:2"), cluster, False)["node"] == "b"
    assert _facts_for(endpoint("grpc://localhost:2"), one, True) is one  # one server, one URL
    assert _facts_for(endpoint("grpc://127.0.0.1:2"), one, False) is one
    for at, given in (("grpc://localhost:2", one), ("grpc://10.0.0.9:2", cluster)):
        with pytest.raises(VisionbenchError, match=f"names no server at {at}"):
            _facts_for(endpoint(at), given, at.endswith("9:2"))
    assert _facts_for(endpoint("grpc://h:2"), None, False) == {}


def test_an_error_message_keeps_its_start_and_its_reason_at_the_end() -> None:
    from visionbench.serving.client import error_message

    quoted = "[500] Failed to encode \"" + "\\xff\"$" * 300 + "\" using UTF-8. Use binary_data=True."
    said = error_message(RuntimeError(quoted))
    assert len(said) <= 200 and said.startswith("[500] Failed to encode") and said.endswith(
        "using UTF-8. Use binary_data=True.") and " … " in said
    assert error_message(RuntimeError("short\n  one")) == "short one"
    assert error_message(TimeoutError()) == "TimeoutError"


def test_jpeg_requests_take_the_files_in_turn_and_mismatches_are_one_line() -> None:
    from visionbench.serving.client import Tensor
    from visionbench.serving.loadtest import _input

    files = [b"\xff\xd8\xff a", b"\xff\xd8\xff b", b"\xff\xd8\xff c"]
    sent = _input("m-jpeg", [Tensor("image", "BYTES", (2,))], None, files)
    assert [list(r) for r in sent] == [files[:2], files[1:], [files[2], files[0]]]
    assert all(r.dtype == object for r in sent)
    (tensor,) = _input("m", [Tensor("x", "FP32", (1, 3, 8, 8))], None, None)
    assert tensor.shape == (1, 3, 8, 8) and tensor.dtype == np.float32
    with pytest.raises(VisionbenchError, match="give --jpeg"):
        _input("m-jpeg", [Tensor("image", "BYTES", (1,))], None, None)
    with pytest.raises(VisionbenchError, match="serve's JPEG model is m-jpeg"):
        _input("m", [Tensor("x", "FP32", (1, 3, 8, 8))], None, files)
    with pytest.raises(VisionbenchError, match="variable shape"):
        _input("m-jpeg", [Tensor("image", "BYTES", (-1,))], None, files)


def test_few_spread_parts_never_give_an_interval_below_zero() -> None:
    from visionbench.stats import t_interval

    assert t_interval([1.0, 30.0])[0] < 0 and t_interval([1.0, 30.0], at_least=0.0)[0] == 0.0
    # a latency's percentile between windows: one window of quick answers, one of slow ones
    quick, slow = np.full(200, 2_000_000), np.full(200, 90_000_000)
    lat = latency_summary(np.concatenate([quick, slow]), [quick, slow])
    assert lat.p50_ci is not None and lat.p50_ci[0] >= 0 and lat.p99_ci is not None and lat.p99_ci[0] >= 0


def test_a_point_is_judged_against_the_generators_ceiling() -> None:
    """The no-op model's best throughput on the same server and protocol is the client's
    ceiling; a point's share of it is recorded, and above half the report flags it."""
    from visionbench.reporting.sections import loadtest as section
    from visionbench.results.schema import CEILING_SHARE
    from visionbench.serving.loadtest import ceiling_share

    noop = [_point(1, 400, 2), _point(2, 1000, 3)]
    for q in noop:
        q.model = "noop"
    slow, fast = _point(1, 100, 10), _point(4, 700, 12)
    for p in (slow, fast):
        ceiling_share(p, [*noop, slow], "noop")
    assert (slow.ceiling_share, fast.ceiling_share, fast.ceiling_model) == (0.1, 0.7, "noop")
    other = _point(1, 100, 10)
    other.url = "http://elsewhere:1"
    ceiling_share(other, noop, "noop")  # another server's no-op is not this one's ceiling
    assert other.ceiling_share is None
    results = SimpleNamespace(loadtest=[*noop, slow, fast])
    (sec,) = section(results)  # type: ignore[arg-type]
    col = [c.name for c in sec.columns].index("of ceiling")
    flagged = [r.cells[col] for r in sec.rows if col in r.alerts]
    assert fast.ceiling_share > CEILING_SHARE and flagged == ["70% NEAR CEILING"]
    assert sec.figures and sec.figures[0][0] == "served"


def test_the_servers_own_times_come_per_request_from_two_readings() -> None:
    """serve's statistics (Triton's extension shape), read before and after a window, give the
    requests the server finished in it and each time's mean per request."""
    from visionbench.serving.client import per_request_ms, totals
    from visionbench.serving.server import Statistics

    st = Statistics()
    st.add("success", 3_000_000)
    before = totals(st.as_triton("m"), "m")
    for _ in range(4):
        st.add("success", 5_000_000)
        st.add("queue", 1_000_000)
        st.add("compute_infer", 3_000_000)
    st.add("fail", 9_000_000)
    n, ms = per_request_ms(before, totals(st.as_triton("m"), "m"))
    assert n == 4 and ms["success"] == 5.0 and ms["queue"] == 1.0 and ms["compute_infer"] == 3.0
    assert per_request_ms(before, before) == (0, {})
    with pytest.raises(StopIteration):
        totals(st.as_triton("m"), "other")


def test_bad_loadtest_input_is_one_line(tmp_path: Path) -> None:
    cases = [["loadtest", "ftp://h:1", "--model", "m"],
             ["loadtest", "http://127.0.0.1:1", "--model", "m", "--output", str(tmp_path / "a")],
             ["loadtest", "grpc://127.0.0.1:1", "--model", "m", "--output", str(tmp_path / "b")],
             ["loadtest", "http://127.0.0.1:1", "--model", "m", "--concurrency", "0"],
             ["loadtest", "http://127.0.0.1:1", "--model", "m", "--duration", "-1"],
             ["serve", "resnet50-tiny", "--http-port", "70000"],
             ["serve", "resnet50-tiny", "--precision", "fp64"],
             ["serve", "resnet50-tiny", "--nodes", "a"],
             ["serve", "resnet50-tiny", "--address", "auto", "--host", "0.0.0.0"],
             ["loadtest", "grpc://127.0.0.1:1", "grpc://127.0.0.1:1", "--model", "m"],
             ["loadtest", "grpc://127.0.0.1:1", "grpc://127.0.0.1:2", "--model", "m", "--rate", "5"],
             # not an address of this machine (TEST-NET-3): refused once the model is prepared
             ["serve", "resnet50-tiny", "--host", "203.0.113.7", "--calibration-samples", "8"]]
    procs = vb_many(cases, timeout=120)
    for proc in procs:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot listen on 203.0.113.7" in procs[-1].stderr
    assert "give --address too" in procs[-5].stderr and "its node's own address" in procs[-4].stderr
    assert "each server's URL once" in procs[-3].stderr and "--rate loads one" in procs[-2].stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing claimed


def test_a_cluster_nodes_server_is_serves_command_line_with_the_nodes_cpus() -> None:
    pytest.importorskip("ray", reason="pip install 'visionbench[fleet]'")
    from visionbench.cli.serving import serve
    from visionbench.ray_fleet.servers import SERVE_FLAGS, node_argv

    argv = node_argv("resnet50", "10.0.0.2", 4.0, {"engines": ["openvino"], "precisions": ["int8"],
                                                   "weights": "w.onnx", "http_port": 8000})
    assert argv == ["resnet50", "--host", "10.0.0.2", "--threads", "4", "--engine", "openvino",
                    "--precision", "int8", "--weights", str(Path("w.onnx").absolute()),
                    "--http-port", "8000"]
    assert node_argv("m", "h", 0.5, {"threads": 3})[3:5] == ["--threads", "3"]
    with pytest.raises(VisionbenchError, match="not modes"):
        node_argv("m", "h", 1, {"modes": "latency"})
    # every flag a node's server is given is one serve takes
    takes = {o for p in serve.params for o in p.opts}
    assert set(SERVE_FLAGS.values()) <= takes


def test_a_triton_server_is_loaded_as_its_protocol_documents_it(tmp_path: Path) -> None:
    """Compatibility by protocol: Triton's own answers replayed (server and model metadata, a
    dynamic batch dimension, binary outputs, Triton's statistics and error object)."""
    from v2_replay import TIMES_NS, replay
    from visionbench import api

    with replay() as url:
        with pytest.raises(VisionbenchError, match=r"variable shape \[-1, 3, 224, 224\]: give "
                                                   "--input-shape"):
            api.loadtest(url, "resnet50", output=tmp_path / "none")
        r = api.loadtest(url, "resnet50", concurrency=(1, 2), duration=0.6, warmup=0.1,
                         input_shape=(2, 3, 224, 224), output=tmp_path / "ok")
    assert [p.concurrency for p in r.loadtest] == [1, 2] and r.model.fixed_batch == 2
    for p in r.loadtest:
        assert p.status == "ok" and p.requests > 0 and not p.errors and p.images_per_request == 2
        assert p.server["name"] == "triton" and "statistics" in p.server["extensions"]
        assert p.server_requests is not None and abs(p.server_requests - p.requests) <= 2 * p.concurrency
        assert p.server_ms == {k: ns / 1e6 for k, ns in TIMES_NS.items()}
    with replay(fail_every=2) as url:
        r = api.loadtest(url, "resnet50", concurrency=(1,), duration=0.6, warmup=0,
                         input_shape=(1, 3, 224, 224), output=tmp_path / "errors")
    (p,) = r.loadtest
    assert p.status == "ok" and p.errors["http 4xx"] > 0 and "not enough space" in p.error_messages[
        "http 4xx"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, dict]]:
    """``visionbench serve`` of the tiny model on loopback, ports chosen by the system."""
    proc, facts = vb_serve("resnet50-tiny", "--engine", "openvino", "--precision", "fp32",
                           "--calibration-samples", "8", ready=tmp_path / "ready.json")
    try:
        yield proc, facts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


SHORT = ["--concurrency", "1,2,4", "--duration", "1", "--warmup", "0.3"]


@pytest.mark.slow
def test_serve_then_loadtest_over_http_and_grpc(server, tmp_path: Path) -> None:
    proc, facts = server
    assert facts["http"].startswith("http://127.0.0.1:") and facts["grpc"].startswith(
        "grpc://127.0.0.1:") and facts["http_port"] > 0 and facts["grpc_port"] > 0
    assert facts["engine"] == "openvino" and facts["requests"] >= 1 and facts["batch_size"] == 1
    out = tmp_path / "load"
    http = vb("loadtest", facts["http"], "--model", "resnet50-tiny", *SHORT, "--output", str(out),
              "--server-facts", str(tmp_path / "ready.json"), "--ceiling", "noop", timeout=120)
    assert http.returncode == 0, http.stderr
    grpc = vb("loadtest", facts["grpc"], "--model", "resnet50-tiny", *SHORT, "--output", str(out),
              "--server-facts", str(tmp_path / "ready.json"), "--append", timeout=120)
    assert grpc.returncode == 0, grpc.stderr
    r = load(out)
    assert r.kind == "loadtest" and r.status == "complete" and r.model.name == "resnet50-tiny"
    ceiling = [p for p in r.loadtest if p.model == "noop"]
    assert [p.concurrency for p in ceiling] == [1, 2, 4] and all(p.protocol == "http" for p in ceiling)
    assert all(p.ceiling_share is not None and 0 < p.ceiling_share < 10 for p in r.loadtest
               if p.protocol == "http" and p.model != "noop")
    for protocol in ("http", "grpc"):
        points = [p for p in r.loadtest if p.protocol == protocol and p.model != "noop"]
        assert [p.concurrency for p in points] == [1, 2, 4]
        for p in points:
            assert p.status == "ok" and p.requests > 0 and not p.errors
            assert p.throughput_ips is not None and 0 < p.throughput_ips < 1e5
            lo, hi = p.throughput_ci or (math.nan, math.nan)
            assert lo <= p.throughput_ips <= hi
            lat = p.latency
            assert lat is not None and 0 < lat.p50_ms <= lat.p99_ms < 5000
            assert lat.p50_ci is not None and lat.p50_ci[0] <= lat.p50_ms <= lat.p50_ci[1]
            assert lat.p99_ci is not None and lat.p99_ci[0] <= lat.p99_ms <= lat.p99_ci[1]
            assert 0 < p.client_cpu_cores < 2
            assert p.server["name"] == "kserve"
            # the server's own times (read over HTTP for the gRPC sweep too, from serve's facts):
            # its requests within the users in flight at the window's edges of the client's count
            assert p.server_requests is not None and abs(p.server_requests - p.requests) <= 2 * p.concurrency
            ms = p.server_ms
            assert 0 < ms["compute_infer"] <= ms["success"] <= lat.mean_ms * 1.5, ms
        assert sum(p.knee for p in points) == 1
    assert next(p for p in r.loadtest if p.protocol == "http").server["engine"] == "openvino"
    # LoadGen's Server scenario (open loop, Poisson arrivals) at a rate below the gRPC knee: VALID
    knee = next(p for p in r.loadtest if p.protocol == "grpc" and p.knee)
    rate = f"{max(1.0, round(knee.throughput_ips / 3)):g}"
    served = vb("loadtest", facts["grpc"], "--model", "resnet50-tiny", "--rate", rate,
                "--duration", "3", "--min-queries", "16", "--target-latency-ms", "2000",
                "--output", str(out), "--append", timeout=120)
    assert served.returncode == 0, served.stderr
    (open_loop,) = [p for p in load(out).loadtest if p.mode == "poisson"]
    assert open_loop.valid and open_loop.loadgen["validity"] == "VALID", open_loop
    assert open_loop.target_qps == float(rate) and open_loop.requests >= 16 and not open_loop.errors
    assert abs(open_loop.loadgen["scheduled_qps"] - float(rate)) < 0.5 * float(rate)
    assert (out / open_loop.loadgen["logs"] / "mlperf_log_detail.txt").exists()
    assert "LoadGen Server at" in served.stdout and "VALID" in served.stdout
    # --jpeg: the files sent as they are, decoded and preprocessed by the server (gRPC)
    assert facts["jpeg_model"] == "resnet50-tiny-jpeg" and facts["decoder"].startswith("simplejpeg")
    jpeg = vb("loadtest", facts["grpc"], "--model", "resnet50-tiny-jpeg", "--jpeg", "--concurrency",
              "1,2", "--duration", "1", "--warmup", "0.3", "--output", str(tmp_path / "jpeg"),
              "--server-facts", str(tmp_path / "ready.json"), timeout=120)
    assert jpeg.returncode == 0, jpeg.stderr
    decoded = load(tmp_path / "jpeg").loadtest
    assert [p.concurrency for p in decoded] == [1, 2] and all(not p.errors for p in decoded)
    # the model and its JPEG twin at once: they share the engine's requests, never one at once
    both = vb_many([["loadtest", facts["grpc"], "--model", name, *jpeg_flag, "--concurrency", "4",
                     "--duration", "1", "--warmup", "0.2", "--output", str(tmp_path / name)]
                    for name, jpeg_flag in (("resnet50-tiny", []),
                                            ("resnet50-tiny-jpeg", ["--jpeg"]))], timeout=120)
    for run, name in zip(both, ("resnet50-tiny", "resnet50-tiny-jpeg"), strict=True):
        assert run.returncode == 0 and not run.stderr.strip(), run.stderr
        (p,) = load(tmp_path / name).loadtest
        assert p.requests > 0 and not p.errors
    tensor_c1 = next(p for p in points if p.concurrency == 1)  # the gRPC tensor sweep's
    # decoding a photo and resizing it takes the server longer than reading a tensor
    assert decoded[0].server_ms["compute_input"] > tensor_c1.server_ms["compute_input"]
    assert decoded[0].images_per_request == 1 and decoded[0].model == "resnet50-tiny-jpeg"
    # KServe 0.21's REST path turns binary BYTES into UTF-8 text (docs/serving.md): a JPEG
    # cannot pass; the failure is the server's, counted and quoted
    rest = vb("loadtest", facts["http"], "--model", "resnet50-tiny-jpeg", "--jpeg", "--concurrency",
              "1", "--duration", "0.5", "--warmup", "0", "--output", str(tmp_path / "rest"),
              timeout=120)
    assert rest.returncode != 0 and len(rest.stderr.strip().splitlines()) == 1, rest.stderr
    assert "http 5xx" in rest.stderr and "UTF-8" in rest.stderr
    assert "Served: the client" in (out / "report.html").read_text()
    assert (out / "served.png").stat().st_size > 10_000 and (out / "served.svg").exists()
    # Ctrl-C or SIGTERM stop it cleanly: exit 0 and the signal named
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped by SIGTERM" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_a_server_killed_mid_sweep_keeps_the_points_before(server, tmp_path: Path) -> None:
    proc, facts = server
    out = tmp_path / "load"
    load_proc = subprocess.Popen(
        [sys.executable, "-m", "visionbench", "loadtest", facts["grpc"], "--model",
         "resnet50-tiny", "--concurrency", "1,2,4,8", "--duration", "1.5", "--warmup", "0.3",
         "--timeout", "5", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not (out / "results.json").exists() or not load(out).loadtest:
        assert load_proc.poll() is None and time.monotonic() < deadline, load_proc.communicate()
        time.sleep(0.1)
    proc.kill()  # after the first point: the points before stay, the next ones fail
    _, err = load_proc.communicate(timeout=120)
    assert load_proc.returncode != 0 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "answered no request" in err, err
    r = load(out)
    assert r.status == "failed" and r.loadtest[0].status == "ok" and r.loadtest[0].requests > 0
    failed = r.loadtest[-1]
    assert failed.status == "failed" and sum(failed.errors.values()) > 0, failed
    assert set(failed.errors) <= {"grpc UNAVAILABLE", "refused", "disconnected", "timeout"}


def _gone(pid: int) -> bool:
    """The process has ended: vanished, or a zombie its new parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.slow
def test_a_server_whose_parent_is_gone_stops(tmp_path: Path) -> None:
    """serve --address's servers are children of Ray actors: one whose actor's process dies
    stops by itself (PARENT_ENV)."""
    ready = tmp_path / "ready.json"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys, time
env = {{**os.environ, "VISIONBENCH_SERVE_PARENT": str(os.getpid()), "VISIONBENCH_FAKE_ENGINE": "1"}}
server = subprocess.Popen([sys.executable, "-m", "visionbench", "serve", "resnet50-tiny", "--engine",
                           "fake", "--ready-file", {str(ready)!r}], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(server.pid, flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        os.kill(pid, 0)  # serving
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while not _gone(pid):
            assert time.monotonic() < deadline, "the orphaned server still runs"
            time.sleep(0.2)
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError, NameError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_failed_and_late_requests_are_counted_by_kind_and_the_run_goes_on(tmp_path: Path) -> None:
    """A faulty server: KServe's own, on the fake engine failing every 3rd call of a session
    (HTTP 500, gRPC INTERNAL) and stalling every 5th past the client's timeout."""
    env = {**os.environ, "VISIONBENCH_FAKE_ENGINE": json.dumps(
        {"fail_every": 3, "stall_every": 5, "stall_ms": 600, "ms_per_batch": 5})}
    proc, facts = vb_serve("resnet50-tiny", "--engine", "fake", ready=tmp_path / "ready.json",
                           env=env)
    try:
        runs = vb_many([["loadtest", facts[protocol], "--model", "resnet50-tiny", "--concurrency",
                         "1,2", "--duration", "1.5", "--warmup", "0.3", "--timeout", "0.3",
                         "--output", str(tmp_path / protocol)] for protocol in ("http", "grpc")],
                       timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, server_err = proc.communicate(timeout=30)
    for protocol, run in zip(("http", "grpc"), runs, strict=True):
        assert run.returncode == 0, run.stderr
        (said,) = run.stderr.strip().splitlines()
        assert said.startswith("visionbench: 2 of 2 points had failed requests (") and "timeout" in said
        r = load(tmp_path / protocol)
        assert r.status == "complete" and [p.concurrency for p in r.loadtest] == [1, 2]
        failed = "http 5xx" if protocol == "http" else "grpc INTERNAL"
        for p in r.loadtest:
            assert p.status == "ok" and p.requests > 0 and p.errors.get(failed, 0) > 0, p.errors
            assert set(p.errors) <= {failed, "timeout"}, p.errors
            assert p.throughput_ips is not None and p.throughput_ci is not None
            assert 0 <= p.throughput_ci[0] <= p.throughput_ips <= p.throughput_ci[1]
            assert p.latency is not None and p.latency.p99_ms < 300  # the timed-out ones are not in it
        assert sum(p.errors.get("timeout", 0) for p in r.loadtest) > 0
    # the server said each failure in one line, no traceback
    lines = server_err.strip().splitlines()
    assert "Traceback" not in server_err and len(lines) > 2
    assert all(line.startswith("visionbench serve: ") for line in lines), lines[:5]
    assert any("the fake engine fails every 3 calls" in line for line in lines)
