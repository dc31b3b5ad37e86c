"""``visionbench loadtest``: a closed-loop concurrency sweep against any KServe v2 server. At each
point, N simulated users (one connection each) send the same request back to back; after a
warm-up, the requests that complete within the window are counted, their latencies (send to
response, as the client sees them) give the percentiles with their 95% intervals (the window cut
in equal parts for the spread between parts, as ``run`` does with its windows), errors are
counted by kind, and the generator's own CPU time is measured beside. The knee is the point of
highest throughput whose p99 stays within ``KNEE_P99`` times the one-user p99."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.config import RunConfig
from visionbench.errors import VisionbenchError
from visionbench.fsutil import own_dir
from visionbench.machine import Machine
from visionbench.results import Results, RunStore, now
from visionbench.results.policy import check_output, claim, join
from visionbench.results.schema import Invocation, LoadPoint, ModelInfo, loadtest_key
from visionbench.scenarios.mlperf.settings import Options
from visionbench.serving import JPEG_SUFFIX, NOOP
from visionbench.serving.client import (
    Client,
    Endpoint,
    Tensor,
    endpoint,
    error_kind,
    error_message,
    per_request_ms,
    statistics,
)
from visionbench.stats import latency_summary, t_interval
from visionbench.sysinfo import system_info
from visionbench.version import __version__

#: The knee: the highest throughput whose p99 is at most this many times the one-user p99.
KNEE_P99 = 2.0
#: A user that met an error waits this long before its next request (no spinning on a dead
#: server); the wait is not a request.
ERROR_PAUSE_S = 0.05


@dataclass
class Plan:
    concurrency: list[int]
    duration_s: float = 5.0
    warmup_s: float = 1.0
    windows: int = 3
    timeout_s: float = 30.0
    input_shape: tuple[int, ...] | None = None
    #: The server's no-op model, swept first at the same concurrencies (the generator's ceiling).
    ceiling: str | None = None
    #: JPEG files sent as they are (a BYTES input: decoded on the server), in turn.
    jpegs: list[bytes] | None = None
    #: Open loop instead of the sweep: LoadGen's Server scenario at each rate (queries/s),
    #: its requests sent on ``connections`` connections, under ``loadgen``'s settings.
    rates: list[float] | None = None
    connections: int = 32
    loadgen: Options | None = None


@dataclass(frozen=True)
class Target:
    """A server to load: its endpoint, what it says of itself (and what serve wrote of it), and
    host:port of its HTTP endpoint, where Triton's statistics extension is read."""

    at: Endpoint
    server: dict[str, Any]
    stats_at: str | None


async def _user(client: Client, until: float, done: list[tuple[int, int]],
                failed: list[tuple[int, str]], said: dict[str, str]) -> None:
    while time.perf_counter() < until:
        t0 = time.perf_counter_ns()
        try:
            await client.infer()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a request's failure is a result, counted by kind
            kind = error_kind(e)
            failed.append((time.perf_counter_ns(), kind))
            said.setdefault(kind, error_message(e))
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        t1 = time.perf_counter_ns()
        done.append((t1, t1 - t0))


async def _point(target: Target, model: str, users: int, plan: Plan, inputs: list[Tensor],
                 outputs: list[Tensor], data: list[np.ndarray]) -> LoadPoint:
    at, server, stats_at = target.at, target.server, target.stats_at
    clients = [Client(at, model, plan.timeout_s) for _ in range(users)]
    started = now()
    try:
        for n, c in enumerate(clients):
            c.prepare(inputs, outputs, data, first=n)
        until = time.perf_counter() + plan.warmup_s
        said: dict[str, str] = {}
        await asyncio.gather(*(_user(c, until, [], [], said) for c in clients))
        said.clear()  # the window's errors are quoted, not the warm-up's
        done: list[tuple[int, int]] = []
        failed: list[tuple[int, str]] = []
        # The server's counters, read around the window: requests in flight at either edge
        # make them differ from the client's count by at most the users.
        before = await statistics(stats_at, model, plan.timeout_s) if stats_at else None
        start_ns, cpu0 = time.perf_counter_ns(), time.process_time()
        end_ns = start_ns + int(plan.duration_s * 1e9)
        deadline = time.perf_counter() + plan.duration_s
        await asyncio.gather(*(_user(c, deadline, done, failed, said) for c in clients))
        cpu = time.process_time() - cpu0
        after = await statistics(stats_at, model, plan.timeout_s) if before else None
    finally:
        for c in clients:
            await c.close()
    # What completed within the window; the requests in flight at its end complete after it.
    kept = [(t, lat) for t, lat in done if t <= end_ns]
    per_image = _images_per_request(data)
    errors = dict(Counter(kind for t, kind in failed if t <= end_ns))
    p = LoadPoint(url=at.url, protocol=at.protocol, model=model, concurrency=users,
                  status="ok" if kept else "failed", window_s=plan.duration_s,
                  warmup_s=plan.warmup_s, requests=len(kept), images_per_request=per_image,
                  errors=errors, error_messages={k: said[k] for k in errors if k in said},
                  client_cpu_cores=round(cpu / plan.duration_s, 3),
                  server=server, started_at=started, finished_at=now())
    if before is not None and after is not None:
        n, p.server_ms = per_request_ms(before, after)
        p.server_requests = n
    if not kept:
        p.reason = "no request completed: " + (", ".join(f"{n} {k}" for k, n in errors.items())
                                               or "none answered within the window")
        if p.error_messages:
            first = next(iter(p.error_messages.values()))
            p.reason += f" (the first said: {first})"
        return p
    edges = np.linspace(start_ns, end_ns, plan.windows + 1)
    ends = np.array([t for t, _ in kept])
    lat = np.array([lat for _, lat in kept], dtype=np.int64)
    parts = [lat[(ends > lo) & (ends <= hi)] for lo, hi in pairwise(edges)]
    part_s = plan.duration_s / plan.windows
    p.throughput_ips = len(kept) * per_image / plan.duration_s
    p.throughput_ci = t_interval([len(x) * per_image / part_s for x in parts], at_least=0.0)
    p.latency = latency_summary(lat, [x for x in parts if len(x)])
    return p


def _images_per_request(data: list[np.ndarray]) -> int:
    """A request's images: its tensor's batch, or its JPEG files."""
    return int(data[0].shape[0]) if data[0].ndim else 1


def mark_knee(points: list[LoadPoint]) -> LoadPoint | None:
    """The knee of one protocol's points (marked on it): the highest throughput whose p99 is
    within KNEE_P99 times the p99 at the lowest concurrency."""
    ok = [p for p in points if p.status == "ok" and p.latency is not None]
    if not ok:
        return None
    base = min(ok, key=lambda p: p.concurrency).latency
    assert base is not None
    within = [p for p in ok if p.latency is not None and p.latency.p99_ms <= KNEE_P99 * base.p99_ms]
    knee = max(within, key=lambda p: p.throughput_ips or 0.0)
    for p in points:
        p.knee = p is knee
    return knee


async def _describe(at: Endpoint, model: str, timeout_s: float
                    ) -> tuple[list[Tensor], list[Tensor], dict[str, Any]]:
    probe = Client(at, model, timeout_s)
    try:
        server = await probe.server()
        inputs, outputs = await probe.metadata()
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise VisionbenchError(f"{at.url}: cannot read model {model!r} from the server: "
                               f"{error_kind(e)}" + (f": {first}" if first else "")) from e
    finally:
        await probe.close()
    return inputs, outputs, server


def _input(model: str, inputs: list[Tensor], given: tuple[int, ...] | None,
           jpegs: list[bytes] | None) -> list[np.ndarray]:
    """The requests' tensors, sent in turn: random FP32 of the model's input shape (or
    ``given``); or, with ``jpegs``, the files themselves as BYTES, as many a request as the
    model's input takes, each request starting at the next file."""
    if len(inputs) != 1:
        raise VisionbenchError(f"{model} takes {len(inputs)} inputs: loadtest sends one")
    t = inputs[0]
    if (t.datatype == "BYTES") != (jpegs is not None):
        raise VisionbenchError(
            f"{model}'s input is {t.datatype}: " + ("loadtest --jpeg sends JPEG files as BYTES "
                                                     f"(serve's JPEG model is {model}{JPEG_SUFFIX})"
                                                     if jpegs is not None else "give --jpeg to "
                                                     "send it JPEG files"))
    if t.datatype not in ("FP32", "BYTES"):
        raise VisionbenchError(f"{model}'s input is {t.datatype}: loadtest sends FP32")
    shape = given or t.shape
    if not shape or any(d < 1 for d in shape):
        raise VisionbenchError(f"{model}'s input {t.name} has a variable shape "
                               f"{list(t.shape)}: give --input-shape")
    if jpegs is None:
        return [np.random.default_rng(0).random(shape, dtype=np.float32)]
    if len(shape) != 1:
        raise VisionbenchError(f"{model}'s input {t.name} has shape {list(shape)}: loadtest "
                               "--jpeg sends a list of files, shape [images]")
    return [np.array([jpegs[(i + k) % len(jpegs)] for k in range(shape[0])], dtype=np.object_)
            for i in range(len(jpegs))]


def model_info(at: Endpoint, model: str, inputs: list[Tensor], outputs: list[Tensor],
               requests: list[np.ndarray]) -> ModelInfo:
    """The served model as its metadata describes it (its file is the server's)."""
    out, data = (outputs[0].shape if outputs else ()), requests[0]
    return ModelInfo(name=model, path=at.url, source=f"served at {at.url}", sha256="",
                     input_name=inputs[0].name, input_layout="", input_shape_per_image=list(
                         data.shape[1:]), fixed_batch=int(data.shape[0]), gflop_per_image=None,
                     num_classes=int(out[-1]) if out else None,
                     outputs=[o.name for o in outputs])


def ceiling_share(p: LoadPoint, points: list[LoadPoint], ceiling: str) -> None:
    """Mark ``p`` with its share of the generator's ceiling: the best throughput of the no-op
    model ``ceiling`` on the same server and protocol among ``points``, where there is one."""
    best = max((q.throughput_ips or 0.0 for q in points if q.model == ceiling and q.url == p.url
                and q.status == "ok"), default=0.0)
    if p.model != ceiling and best > 0 and p.throughput_ips is not None:
        p.ceiling_share, p.ceiling_model = round(p.throughput_ips / best, 3), ceiling


def _facts_for(at: Endpoint, given: dict[str, Any] | None, alone: bool) -> dict[str, Any]:
    """What serve wrote of the server at ``at``: its ready file's facts (serve --address: the
    entry among its servers whose URL is ``at``'s); one line where the file names no server at
    ``at`` (one URL and one server's file: that server, whatever its URL is called here)."""
    if not given:
        return {}
    servers = given.get("servers")
    entries = servers if isinstance(servers, list) else [given]
    found = next((s for s in entries if isinstance(s, dict) and at.url in
                  (s.get("http"), s.get("grpc"))), None)
    if found is None and alone and not isinstance(servers, list):
        found = given
    if found is None:
        named = [u for s in entries if isinstance(s, dict) for u in (s.get("http"), s.get("grpc"))
                 if isinstance(u, str)]
        raise VisionbenchError(f"--server-facts names no server at {at.url} (it names "
                               f"{', '.join(named) or 'none'})")
    return found


def _target(at: Endpoint, said: dict[str, Any], facts: dict[str, Any]) -> Target:
    server = {**said, **facts}
    if at.protocol == "http":
        return Target(at, server, at.address)
    if isinstance(server.get("http"), str):  # serve's facts name its HTTP endpoint
        return Target(at, server, endpoint(server["http"]).address)
    return Target(at, server, None)


def loadtest(urls: list[str], model: str, plan: Plan, output: Path, existing: str,
             command: list[str], server_facts: dict[str, Any] | None = None,
             on_point: Callable[[LoadPoint], None] = lambda p: None) -> Results:
    """The sweep of ``plan`` against ``model`` at ``urls``, into the run directory ``output``
    (the run-directory rules of ``run``: refused if it holds anything but a run, ``--append``
    adds the points to a loadtest run there); each point stored the moment it is measured.
    Several servers (a cluster's, from ``serve --address``) are loaded together, each by its
    own users, a point each. A server that stops answering ends the sweep: the points before
    are kept, the run is marked failed and the error names the point."""
    if not plan.concurrency or min(plan.concurrency) < 1:
        raise VisionbenchError("--concurrency takes positive integers")
    if plan.rates is not None and (not plan.rates or min(plan.rates) <= 0 or plan.connections < 1):
        raise VisionbenchError("--rate takes positive queries per second, --connections a "
                               "positive integer")
    if plan.duration_s <= 0 or plan.warmup_s < 0 or plan.timeout_s <= 0:
        raise VisionbenchError("--duration and --timeout must be positive, --warmup not negative")
    ats = [endpoint(u) for u in urls]
    if not ats or len(set(ats)) < len(ats):
        raise VisionbenchError("give each server's URL once")
    if plan.rates and len(ats) > 1:
        raise VisionbenchError("--rate loads one server: give one URL")
    check_output(output, existing)
    names = ([plan.ceiling] if plan.ceiling and plan.ceiling != model else []) + [model]
    sweeps: list[tuple[str, list[Tensor], list[Tensor], list[np.ndarray]]] = []
    targets = []  # the ceiling's sweep first; every server must describe the models alike
    for at in ats:
        for name in names:
            inputs, outputs, said = asyncio.run(_describe(at, name, plan.timeout_s))
            if len(sweeps) < len(names):
                jpegs = plan.jpegs if name == model else None  # the no-op model takes tensors
                sweeps.append((name, inputs, outputs,
                               _input(name, inputs, plan.input_shape, jpegs)))
            elif (inputs, outputs) != sweeps[names.index(name)][1:3]:
                raise VisionbenchError(f"{at.url} serves {name} with other inputs or outputs "
                                       f"than {ats[0].url}: load servers of one model together")
        targets.append(_target(at, said, _facts_for(at, server_facts, len(ats) == 1)))
    info = model_info(ats[0], model, *sweeps[-1][1:])
    system = {**system_info().as_dict(), "state": Machine().state().as_dict()}
    software = {"visionbench": __version__, "tritonclient": version("tritonclient")}
    cfg = RunConfig.of(output=output, existing=existing, model=model)
    invocation = Invocation(how="new", kind="loadtest", command=command, config=cfg.as_dict(),
                            started_at=now())  # type: ignore[arg-type]
    lock, prior, aside = claim(output, existing, command)
    try:
        if prior is None:
            results = Results(kind="loadtest", created_at=now(), command=command, system=system,
                              software=software, config=cfg.as_dict(), model=info,
                              invocations=[invocation])
        else:
            invocation.how = "append"
            results = join(prior, existing, output, "loadtest", [(model, "")], system, software,
                           invocation)
        several = len(ats) > 1
        invocation.planned = (
            [loadtest_key(ats[0].protocol, model, plan.connections, r) for r in plan.rates]
            if plan.rates else [loadtest_key(at.protocol, name, c, None, at.url if several else
                                             None) for name in names for c in plan.concurrency
                                for at in ats])
        store = RunStore(output, results, lock, aside)
    except BaseException as e:
        lock.abandon()
        if aside is not None:
            aside.undo(e)
        raise
    with store.recording():
        if plan.rates:
            _open_loop(targets[0], plan, *sweeps[-1], store, on_point)
            store.finish("complete")
            return results
        points: list[LoadPoint] = []
        for name, inputs, outputs, data in sweeps:
            points += asyncio.run(_sweep(targets, name, plan, inputs, outputs, data, store,
                                         on_point))
            if any(p.status == "failed" for p in points):
                break
        gone = next((p for p in points if p.status == "failed"), None)
        if gone is not None:
            store.finish("failed")
            raise VisionbenchError(f"{gone.url} answered no request at concurrency "
                                   f"{gone.concurrency} ({gone.reason}); the points before "
                                   f"are kept in {output}")
        store.finish("complete")
    return results


async def _sweep(targets: list[Target], model: str, plan: Plan, inputs: list[Tensor],
                 outputs: list[Tensor], data: list[np.ndarray], store: RunStore,
                 on_point: Callable[[LoadPoint], None]) -> list[LoadPoint]:
    """Each concurrency on every server at once (its own users each); stops at a point where a
    server answered nothing."""
    points: list[LoadPoint] = []
    together = [t.at.url for t in targets] if len(targets) > 1 else []
    for users in plan.concurrency:
        came = await asyncio.gather(*(_point(t, model, users, plan, inputs, outputs, data)
                                      for t in targets), return_exceptions=True)
        now_ = [p for p in came if isinstance(p, LoadPoint)]
        for p in now_:
            p.together = together
            ceiling_share(p, store.results.loadtest, plan.ceiling or NOOP)
            points.append(p)
            own = [q for q in points if q.url == p.url]
            before = {q.key: q.knee for q in own}
            mark_knee(own)
            for q in own:  # the point stored, and any whose knee mark it moved
                if q is p or q.knee != before[q.key]:
                    store.add(q)
            on_point(p)
        broken = next((e for e in came if isinstance(e, BaseException)), None)
        if broken is not None:  # the other servers' points are stored first
            raise broken
        if any(p.status == "failed" for p in now_):
            break  # nothing came back: the server is gone or refuses
    return points


def _open_loop(target: Target, plan: Plan, model: str, inputs: list[Tensor],
               outputs: list[Tensor], data: list[np.ndarray], store: RunStore,
               on_point: Callable[[LoadPoint], None]) -> None:
    """LoadGen's Server scenario at each of ``plan.rates``: a point each, with LoadGen's verdict,
    its logs under ``loadgen/<key>/`` in the run."""
    from visionbench.serving.loadgen import run_server

    opts, at, server = plan.loadgen or Options("Server"), target.at, target.server
    for rate in plan.rates or []:
        key = loadtest_key(at.protocol, model, plan.connections, rate)
        started, cpu0, t0 = now(), time.process_time(), time.perf_counter()
        detail, broken, lat, errors, said = run_server(at, model, inputs, outputs, data, rate, opts,
                                                 plan.timeout_s, plan.connections,
                                                 own_dir(own_dir(store.dir / "loadgen") / key))
        wall = time.perf_counter() - t0
        summary = latency_summary(lat)
        ran_s = (detail.get("generated_query_duration") or 0) / 1e9 or wall
        p = LoadPoint(
            url=at.url, protocol=at.protocol, model=model, concurrency=plan.connections,
            mode="poisson", target_qps=rate, valid=not broken, status="ok",
            reason="; ".join(broken) or None, window_s=round(ran_s, 2), requests=len(lat),
            images_per_request=_images_per_request(data),
            throughput_ips=detail.get("result_completed_samples_per_sec"), latency=summary,
            errors=errors, error_messages=said,
            client_cpu_cores=round((time.process_time() - cpu0) / wall, 3),
            server=server, started_at=started, finished_at=now(),
            loadgen={"validity": detail.get("result_validity"),
                     "scheduled_qps": detail.get("result_scheduled_samples_per_sec"),
                     "completed_qps": detail.get("result_completed_samples_per_sec"),
                     "p99_ms": (detail.get("result_99.00_percentile_latency_ns") or 0) / 1e6,
                     "target_latency_ms": (detail.get("effective_target_latency_ns") or 0) / 1e6,
                     "min_duration_s": (detail.get("effective_min_duration_ms") or 0) / 1e3,
                     "min_queries": detail.get("effective_min_query_count"),
                     "queries": detail.get("result_query_count"), "rules_broken": broken,
                     "logs": f"loadgen/{key}"})
        store.add(p)
        on_point(p)
