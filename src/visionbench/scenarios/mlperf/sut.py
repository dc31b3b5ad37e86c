"""The system under test: LoadGen's ``issue_queries`` only queues the samples; one worker thread
takes everything waiting (up to the largest prepared batch) and runs it as the fewest prepared
batches: one synchronous call at a time where the session runs one request, else each batch
started on a free request of the session's (``Session.start``, as the asynchronous harness keeps
them in flight), its samples completed when it finishes. And the probe: how fast each prepared
batch runs, and how many images per second its requests in flight give, before LoadGen starts."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionbench.engines.base import Session
from visionbench.harness.timing import TimingPlan, measure_async
from visionbench.scenarios.mlperf.library import SampleLibrary

#: The probe before a run: per batch size, at least this many calls and seconds.
PROBE_CALLS = 5


PROBE_SECONDS = 0.5


@dataclass
class Probe:
    """Per prepared batch size, the median seconds of one call and, where the session keeps
    several requests in flight, the images/s they give, timed before LoadGen starts: the expected
    latencies and throughput LoadGen asks to be told."""

    seconds: dict[int, float] = field(default_factory=dict)
    in_flight_ips: dict[int, float] = field(default_factory=dict)

    def throughput(self) -> float:
        b = max(self.seconds)
        return self.in_flight_ips.get(b) or b / self.seconds[b]


def split(n: int, sizes: list[int]) -> list[int]:
    """``n`` samples as the fewest prepared batches (largest first): 13 over 1,2,4,8 -> 8,4,1."""
    out = []
    for b in sorted(sizes, reverse=True):
        while n >= b:
            out.append(b)
            n -= b
    return out


class SystemUnderTest:
    """Queues LoadGen's queries; one worker batches what is waiting and completes each sample.
    ``keep_top1`` (accuracy mode) reads every batch's outputs, so each batch is one synchronous
    call; otherwise a session's ``requests`` are kept in flight."""

    def __init__(self, lg: Any, sessions: dict[int, Session], qsl: SampleLibrary,
                 max_batch: int, keep_top1: bool) -> None:
        self.lg, self.sessions, self.qsl, self.max_batch = lg, sessions, qsl, max_batch
        self.sizes = sorted(sessions)
        self.keep_top1 = keep_top1
        self.queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        #: Each session's free requests, and the inputs of those running (kept alive until done).
        self.free: dict[int, queue.Queue[int]] = {}
        self.running: dict[tuple[int, int], Any] = {}
        for b, session in sessions.items():
            self.free[b] = queue.Queue()
            for slot in range(self.requests(session)):
                self.free[b].put(slot)
        self.worker = threading.Thread(target=self._work, name="visionbench-sut", daemon=True)
        self.worker.start()

    def issue_queries(self, samples: list[Any]) -> None:
        for s in samples:
            self.queue.put(s)

    def flush_queries(self) -> None:
        pass  # nothing is held back: the worker runs whatever is waiting

    def requests(self, session: Session) -> int:
        """Requests kept in flight on ``session``."""
        return 1 if self.keep_top1 else session.requests

    def stop(self) -> None:
        """End the worker once the queue is done, then wait for every request in flight."""
        self.queue.put(None)
        self.worker.join()
        for b, session in self.sessions.items():
            for _ in range(self.requests(session)):
                self.free[b].get()

    def _work(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            start = 0
            for b in split(len(batch), self.sizes):
                self._run(batch[start: start + b])
                start += b

    def _run(self, samples: list[Any]) -> None:
        b = len(samples)
        session = self.sessions[b]
        if self.requests(session) > 1:
            slot = self.free[b].get()  # a request of this session's finishes first
            try:
                fed = session.feed(np.concatenate([self.qsl.loaded[s.index] for s in samples]))
                self.running[b, slot] = fed
                session.start(slot, fed, lambda: self._done(b, slot, samples))
            except BaseException as e:  # an earlier request's error, or this one's
                self.error = self.error or e
                self._done(b, slot, samples)
            return
        try:
            x = np.concatenate([self.qsl.loaded[s.index] for s in samples])
            logits = session.run(session.feed(x))
        except BaseException as e:
            self.error = self.error or e
            logits = None
        self._complete(samples, logits)

    def _done(self, b: int, slot: int, samples: list[Any]) -> None:
        """A request finished (from the engine's thread): its samples are complete, it is free."""
        self.running.pop((b, slot), None)
        self._complete(samples, None)
        self.free[b].put(slot)

    def _complete(self, samples: list[Any], logits: np.ndarray | None) -> None:
        responses, buffers = [], []
        for i, s in enumerate(samples):
            if self.keep_top1 and logits is not None:
                buf = np.asarray([int(np.argmax(logits[i]))], dtype=np.int32)
                buffers.append(buf)
                responses.append(self.lg.QuerySampleResponse(s.id, buf.ctypes.data, buf.nbytes))
            else:
                responses.append(self.lg.QuerySampleResponse(s.id, 0, 0))
        self.lg.QuerySamplesComplete(responses)


def probe(sessions: dict[int, Session], make: Callable[[int], np.ndarray],
          in_flight: bool = True) -> Probe:
    """The median time of one call per batch size, after one warm-up call: at least
    PROBE_CALLS calls and PROBE_SECONDS of them; and, where a session keeps several requests in
    flight (``in_flight``), the images/s of as many batches with all of them busy."""
    out = Probe()
    for b, session in sessions.items():
        raw = np.concatenate([make(i) for i in range(b)])
        x = session.feed(raw)
        session.run(x)
        times: list[float] = []
        while len(times) < PROBE_CALLS or sum(times) < PROBE_SECONDS:
            t0 = time.perf_counter()
            session.run(x)
            times.append(time.perf_counter() - t0)
        out.seconds[b] = float(np.median(times))
        if in_flight and session.requests > 1:  # the study's asynchronous harness, one window
            plan = TimingPlan(b, warmup=0, repeats=1, iterations=len(times) * session.requests)
            inputs = [session.feed(raw) for _ in range(session.requests)]
            window = measure_async(session.start, session.requests, inputs, plan).windows[0]
            out.in_flight_ips[b] = window.throughput
    return out
