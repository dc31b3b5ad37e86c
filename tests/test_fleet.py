"""visionbench fleet on a real local Ray cluster: a head node with 2 CPUs and a worker node with
1 CPU, both on loopback, dashboard and usage reporting off. Each node's study runs with all its
CPUs as threads, so the 1-CPU node is usually the slower in sequential runs."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visionbench.reporting.fleet import fleet_markdown
from visionbench.results.fleet import summarise

from conftest import TINY, vb, vb_serve

# Everything on 127.0.0.1 (Ray otherwise resolves loopback to the machine's own address), read
# by Ray when it is imported; no usage reporting.
os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: make test-slow and CI run it


STUDY = [*TINY, "--engine", "onnxruntime", "--precision", "fp32", "--batch-size", "16",
         "--repeats", "3", "--warmup", "2"]


@pytest.fixture(scope="module")
def cluster():
    saved = dict(os.environ)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"slow": 1})
    os.environ["RAY_ADDRESS"] = c.address  # what --address auto finds
    try:
        yield c
    finally:
        c.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _nodes(out: Path) -> dict[str, dict]:
    fleet = json.loads((out / "fleet.json").read_text())
    return {n["name"]: n for n in fleet["nodes"]}


def _results(out: Path, node: dict) -> dict:
    return json.loads((out / node["dir"] / "results.json").read_text())


def test_sequential_fleet_reports_every_node_and_names_the_slower_one(cluster, tmp_path: Path):
    out = tmp_path / "fleet"
    proc = vb("fleet", "--address", "auto", *STUDY, "--mode", "throughput,latency",
              "--duration", "1", "--outlier-pct", "5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["status"] == "complete" and fleet["mode"] == "sequential"
    assert fleet["outlier_pct"] == 5
    nodes = _nodes(out)
    assert len(nodes) == 2 and all(n["status"] == "complete" for n in nodes.values())
    by_cpus = {n["cpus"]: n for n in nodes.values()}
    ids = {n.node_id for n in cluster.list_all_nodes()}
    for n in nodes.values():
        r = _results(out, n)
        assert r["node"]["ran_on_node_id"] == n["node_id"] in ids  # ran where it was pinned
        assert r["config"]["threads"] == n["cpus"]  # all the node's CPUs
        assert r["system"]["cpu_model"] and r["status"] == "complete"
        assert n["versions"]["visionbench"] == fleet["driver"]["versions"]["visionbench"]
        ms = {m["id"]: m for m in r["measurements"]}
        assert set(ms) == {"onnxruntime-fp32-throughput", "onnxruntime-fp32-latency"}
        assert all(m["status"] == "ok" and m["throughput_ips"] > 0 for m in ms.values())
        assert all(m["released_at"] is None for m in ms.values())  # no barrier when sequential
        assert (out / n["dir"] / "report.html").exists()
    assert set(by_cpus) == {1.0, 2.0}
    # The 1-CPU node is usually the slower one, but a unit test asserts no speed: the node
    # measured slower is the one the outlier rule must name.
    tput = {n: _results(out, nodes[n])["measurements"][0]["throughput_ips"] for n in nodes}
    slow, fast = sorted(tput, key=tput.get)
    assert tput[slow] < tput[fast]
    md = (out / "fleet.md").read_text()
    median = (tput[slow] + tput[fast]) / 2
    assert f"| onnxruntime | fp32 @16 | fleet median | {median:.1f} |" in md
    assert f"{tput[slow] / median:.2f}x" in md
    # How far the 1-CPU node falls below the median depends on how busy the host is (16-26%
    # here, under 5% once in CI): the 5% rule is checked against the measured gap, and the
    # report re-run with a threshold under the gap must name the slower node, never the other.
    gap = 100 * (1 - tput[slow] / median)
    outliers = md.split("## Outliers")[1]
    assert (f"{slow}: onnxruntime fp32 throughput" in outliers) == (gap > 5)
    assert f"{fast}: onnxruntime fp32 throughput" not in outliers
    named = vb("report", str(out), "--outlier-pct", f"{gap / 2:g}")
    assert named.returncode == 0, named.stderr
    outliers = (out / "fleet.md").read_text().split("## Outliers")[1]
    assert f"{slow}: onnxruntime fp32 throughput" in outliers
    assert f"{fast}: onnxruntime fp32 throughput" not in outliers
    for name in ("fleet.html", "fleet_throughput.png", "fleet_throughput.svg", "fleet_latency.png"):
        assert (out / name).stat().st_size > 1000
    assert "OUTLIER" in (out / "fleet.html").read_text()
    assert f"outlier {slow}" in " ".join(named.stdout.split())

    summary = summarise(out)  # latency: slower means a p50 above the median
    [row] = [r for r in summary.rows if r.key[2] == "latency"]
    for c in row.cells:
        assert c.slower_pct == pytest.approx(100 * (c.value / row.median - 1))
        assert c.ratio == pytest.approx(row.median / c.value)

    # A threshold above the gap names no outlier; compare reads fleet runs.
    assert "None: every node within 90%" in fleet_markdown(summarise(out, 90))
    cmp = vb("compare", str(out), "--output", str(tmp_path / "cmp"))
    assert cmp.returncode == 0, cmp.stderr
    runs = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert set(runs) == {f"fleet/{n}" for n in nodes}

    again = vb("fleet", "--address", "auto", *STUDY, "--output", str(out))
    assert again.returncode == 2
    assert again.stderr.strip().endswith(
        "already holds a run; give another --output, or --overwrite to replace it")
    assert json.loads((out / "fleet.json").read_text())["status"] == "complete"
    appended = vb("fleet", "--address", "auto", *STUDY, "--output", str(out), "--append")
    assert appended.returncode == 2 and "a fleet run is not appended to" in appended.stderr


def test_the_barrier_releases_together_and_never_waits_for_a_node_gone(cluster):
    from visionbench.ray_fleet.node import Barrier

    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        b = Barrier.remote(["a", "b", "c"])
        a1 = b.wait.remote("m1/go", "a")
        assert ray.wait([a1], timeout=0.5)[0] == []
        b.passed.remote("m1/go", "b")  # b does not run m1
        assert ray.wait([a1], timeout=0.5)[0] == []  # c has not arrived
        c1 = b.wait.remote("m1/go", "c")
        t_a, t_c = ray.get([a1, c1], timeout=10)
        assert t_a == t_c  # released together, one release time
        a2 = b.wait.remote("m2/go", "a")
        assert ray.wait([a2], timeout=0.5)[0] == []
        b.leave.remote("b")  # finished
        b.leave.remote("c")  # died
        assert ray.get(a2, timeout=10) >= t_a
    finally:
        ray.shutdown()


def test_concurrent_fleet_times_the_nodes_together(cluster, tmp_path: Path):
    out = tmp_path / "fleet"
    proc = vb("fleet", "--address", "auto", *STUDY, "--mode", "throughput", "--duration", "1",
              "--concurrent", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    nodes = list(_nodes(out).values())
    ms = [_results(out, n)["measurements"][0] for n in nodes]
    released = [m["released_at"] for m in ms]
    assert all(released) and len(set(released)) == 1  # one release, by the barrier's clock
    # three 1 s windows, each ending within half a batch of its second
    assert all(m["timed_seconds"] >= 3 * 0.5 for m in ms)
    per_repeat = [m["throughput_per_repeat"] for m in ms]
    # the median of the summed windows (more than 3 where a disturbed window was measured again;
    # the windows both nodes timed)
    sums = [a + b for a, b in zip(*per_repeat, strict=False)]
    md = (out / "fleet.md").read_text()
    assert f"| onnxruntime | fp32 @16 | cluster aggregate | {statistics.median(sums):.1f} |" in md
    assert "sum of 2 nodes timed together" in md


def test_a_killed_node_keeps_the_other_nodes_results(cluster, tmp_path: Path):
    victim = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"victim": 1})
    head = cluster.head_node.node_id
    out = tmp_path / "fleet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionbench", "fleet", "--address", "auto", *STUDY,
         "--precision", "fp32,int8", "--mode", "throughput,latency", "--duration", "1",
         "--concurrent", "--nodes", f"{head},victim", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once it has sent a measurement
            node = next((n for n in _nodes(out).values() if n["cpus"] == 1.0), None) \
                if (out / "fleet.json").exists() else None
            if node and node["measurements"] >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the victim node never sent a measurement")
        cluster.remove_node(victim, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith("visionbench: error: some nodes failed")
    assert "failed: the node died" in " ".join(stdout.split())
    nodes = {n["cpus"]: n for n in _nodes(out).values()}
    dead, alive = nodes[1.0], nodes[2.0]
    assert dead["status"] == "failed" and "died" in dead["reason"]
    assert len(_results(out, dead)["measurements"]) >= 1  # what it sent before dying is kept
    assert _results(out, dead)["status"] == "failed"
    kept = _results(out, alive)["measurements"]
    assert alive["status"] == "complete", [(m["id"], m["status"], m["reason"]) for m in kept]
    # FP32 and INT8, throughput and latency, and INT8's own configuration on 2 CPUs (a session
    # per core) as a row of its own
    assert [m["status"] for m in kept] == ["ok"] * 5
    assert [m["id"] for m in kept if m["method"] == "engine"] == ["onnxruntime-int8-throughput-engine"]
    assert "fleet median" in (out / "fleet.md").read_text()


def test_a_node_with_another_visionbench_is_named(cluster, tmp_path: Path):
    shim = tmp_path / "shim"  # another visionbench release installed on that node
    (shim / "visionbench-9.9.9.dist-info").mkdir(parents=True)
    (shim / "visionbench-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: visionbench\nVersion: 9.9.9\n")
    other = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"other": 1},
                             env_vars={"PYTHONPATH": str(shim)})
    try:
        proc = vb("fleet", "--address", "auto", *STUDY, "--output", str(tmp_path / "f"))
    finally:
        cluster.remove_node(other)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "runs visionbench 9.9.9, the driver 0." in line and "install the same versions" in line
    assert line.startswith("visionbench: error: node ") and other.node_id[:8] in line


def test_ctrl_c_keeps_what_the_nodes_sent(cluster, tmp_path: Path):
    out = tmp_path / "fleet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "visionbench", "fleet", "--address", "auto", *STUDY,
         "--precision", "fp32,int8", "--duration", "2", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    try:
        deadline = time.monotonic() + 120
        while not ((out / "fleet.json").exists()
                   and any(n["measurements"] for n in _nodes(out).values())):
            assert time.monotonic() < deadline, "no node sent a measurement"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "measurements so far are kept in" in stderr.strip().splitlines()[-1]
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["status"] == "interrupted"
    [node] = [n for n in fleet["nodes"] if n["measurements"]]
    assert node["status"] == "interrupted"
    assert _results(out, node)["status"] == "interrupted"
    assert _results(out, node)["measurements"][0]["status"] == "ok"


def test_a_node_past_its_timeout_is_stopped_and_reported(cluster, tmp_path: Path):
    out = tmp_path / "fleet"
    proc = vb("fleet", "--address", "auto", *STUDY, "--mode", "throughput", "--duration", "3",
              "--nodes", "slow", "--node-timeout", "4", "--output", str(out))
    assert proc.returncode == 2
    [node] = _nodes(out).values()
    assert node["cpus"] == 1.0  # selected by its resource
    assert node["status"] == "timed-out" and "--node-timeout 4 s" in node["reason"]
    assert 4 <= node["seconds"] < 10


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "no-such-node"], "--nodes 'no-such-node' matches no alive node"),
    (["--address", "127.0.0.1:9"], "no Ray cluster answers at 127.0.0.1:9"),
    (["--outlier-pct", "0"], "--outlier-pct must be between 0 and 100"),
    (["--node-timeout", "-1"], "--node-timeout must be positive"),
    (["--concurrent", "--iterations", "5"], "give --duration, not --iterations"),
    (["--runtime-env", "/no/such/env.json"], "--runtime-env /no/such/env.json is not a readable"),
    (["--address", "local"], "--address local would start a Ray cluster of its own, listening on "
                             "every network interface"),
])
def test_bad_fleet_input_is_one_line(cluster, tmp_path: Path, args: list[str], message: str):
    proc = vb("fleet", "--address", "auto", *STUDY, "--output", str(tmp_path / "f"), *args)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert message in line, line


def test_a_server_on_every_node_loaded_from_the_head(cluster, tmp_path: Path):
    """serve --address: one KServe server per node, each on its node's address with its CPUs as
    threads; loadtest from here loads them together; a server killed is named and the other
    goes on; SIGTERM stops them all."""
    pytest.importorskip("tritonclient.grpc", reason="pip install 'visionbench[serve]'")
    ready = tmp_path / "servers.json"
    proc, facts = vb_serve("resnet50-tiny", "--engine", "openvino", "--precision", "fp32",
                           "--address", "auto", ready=ready, timeout=240)
    try:
        servers = facts["servers"]
        ids = {n.node_id for n in cluster.list_all_nodes()}
        assert len(servers) == 2 and {s["node_id"] for s in servers} == ids
        assert sorted(s["threads"] for s in servers) == [1, 2]  # each node's CPUs
        assert facts["grpc"] == [s["grpc"] for s in servers] and len(set(facts["grpc"])) == 2
        assert all(s["http"].startswith("http://127.0.0.1:") for s in servers)
        out = tmp_path / "load"
        load = vb("loadtest", *facts["grpc"], "--model", "resnet50-tiny", "--concurrency", "1,2",
                  "--duration", "1", "--warmup", "0.3", "--server-facts", str(ready),
                  "--output", str(out), timeout=180)
        assert load.returncode == 0, load.stderr
        points = json.loads((out / "results.json").read_text())["loadtest"]
        assert len(points) == 4 and {p["url"] for p in points} == set(facts["grpc"])
        for p in points:
            assert p["status"] == "ok" and p["requests"] > 0 and not p["errors"]
            assert p["together"] == facts["grpc"] and p["server"]["node"] in {
                s["node"] for s in servers}
            assert p["server_requests"] is not None  # read from its own node's HTTP endpoint
        assert sum(p["knee"] for p in points) == 2  # one per server
        md = (out / "summary.md").read_text()
        assert "resnet50-tiny: all 2 servers" in md
        # one server killed: named on stderr, the other still answers
        victim = servers[1]
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(4)
        assert proc.poll() is None
        again = vb("loadtest", servers[0]["grpc"], "--model", "resnet50-tiny", "--concurrency", "1",
                   "--duration", "0.5", "--warmup", "0", "--output", str(tmp_path / "after"))
        assert again.returncode == 0, again.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out_, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert f"the server on node {victim['node']} stopped (exit -9" in err and "1 still serving" in err
    assert err.strip().endswith("stopped by SIGTERM"), err
    assert json.loads(out_.splitlines()[0])["servers"][0]["pid"] == servers[0]["pid"]
    for s in servers:  # every server is gone
        with pytest.raises(OSError):
            os.kill(s["pid"], 0)
