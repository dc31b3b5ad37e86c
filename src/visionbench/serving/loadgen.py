"""An open-loop Poisson load through MLPerf LoadGen's Server scenario, against a KServe v2 server
(MLPerf's network division: LoadGen on one side, the system under test across the network).
LoadGen schedules the queries at the target rate; each sample is sent as one request from a pool
of connections (a request waits for a free one: the client's queue counts in its latency, as it
would for a real client); a failed request is completed all the same and counted by kind. The
verdict (VALID, or the rules broken) is LoadGen's, read from its own log."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.errors import VisionbenchError
from visionbench.scenarios.mlperf.logs import explain, read_detail, start_test
from visionbench.scenarios.mlperf.settings import Options, loadgen, test_settings
from visionbench.scenarios.mlperf.sut import Probe
from visionbench.serving.client import Client, Endpoint, Tensor, error_kind, error_message


class NetworkSut:
    """LoadGen's system under test: each sample one request to the server, sent from an event
    loop of its own on a pool of ``connections`` connections."""

    def __init__(self, lg: Any, at: Endpoint, model: str, inputs: list[Tensor],
                 outputs: list[Tensor], data: list[np.ndarray], timeout_s: float, connections: int
                 ) -> None:
        self.lg = lg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="loadgen-sut", daemon=True)
        self.thread.start()
        self.errors: Counter[str] = Counter()
        #: The first message of each kind of error.
        self.said: dict[str, str] = {}
        #: Each request's latency in ns, from LoadGen's issue to its answer.
        self.latencies: list[int] = []

        async def make() -> tuple[asyncio.Queue[Client], list[Client]]:
            # made in the SUT's loop: an HTTP client's session and the queue belong to it
            clients = [Client(at, model, timeout_s) for _ in range(connections)]
            free: asyncio.Queue[Client] = asyncio.Queue()
            for n, c in enumerate(clients):
                c.prepare(inputs, outputs, data, first=n)
                free.put_nowait(c)
            return free, clients

        self.free, self.clients = asyncio.run_coroutine_threadsafe(make(), self.loop).result()

    def issue_queries(self, samples: list[Any]) -> None:
        t0 = time.perf_counter_ns()
        for s in samples:
            asyncio.run_coroutine_threadsafe(self._one(s.id, t0), self.loop)

    async def _one(self, sample_id: int, t0: int) -> None:
        client = await self.free.get()
        try:
            await client.infer()
            self.latencies.append(time.perf_counter_ns() - t0)
        except Exception as e:  # completed all the same (LoadGen waits for every sample)
            kind = error_kind(e)
            self.errors[kind] += 1
            self.said.setdefault(kind, error_message(e))
        finally:
            self.free.put_nowait(client)
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(sample_id, 0, 0)])

    def flush_queries(self) -> None:
        """Nothing is held back: every sample is sent as it comes."""

    def close(self) -> None:
        async def shut() -> None:
            for c in self.clients:
                await c.close()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


def run_server(at: Endpoint, model: str, inputs: list[Tensor], outputs: list[Tensor],
               data: list[np.ndarray], rate: float, opts: Options, timeout_s: float, connections: int,
               log_dir: Path
               ) -> tuple[dict[str, Any], list[str], np.ndarray, dict[str, int], dict[str, str]]:
    """One LoadGen Server run at ``rate`` queries/s: its detail log's fields, the rules it
    broke (none: VALID), each request's latency (ns), the errors by kind and each kind's first
    message."""
    lg = loadgen()
    settings, _ = test_settings(lg, replace(opts, scenario="Server", target_qps=rate), Probe())
    sut = NetworkSut(lg, at, model, inputs, outputs, data, timeout_s, connections)
    try:
        start_test(lg, (sut.issue_queries, sut.flush_queries),
                   (1, 1, lambda ids: None, lambda ids: None), settings, log_dir)
    finally:
        sut.close()
    detail = read_detail(log_dir / "mlperf_log_detail.txt")
    if not sut.latencies:
        raise VisionbenchError(f"{at.url} answered none of LoadGen's "
                               f"{sum(sut.errors.values())} requests at {rate:g}/s: "
                               + ", ".join(f"{n} {k}" for k, n in sut.errors.items())
                               + "".join(f" (the first said: {m})" for m in
                                         list(sut.said.values())[:1]))
    return (detail, explain("Server", detail), np.array(sut.latencies, dtype=np.int64),
            dict(sut.errors), dict(sut.said))
