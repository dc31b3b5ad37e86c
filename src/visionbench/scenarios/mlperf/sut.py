"""The system under test: LoadGen's ``issue_queries`` only queues the samples; one worker thread
takes everything waiting (up to the largest prepared batch), runs it as the fewest prepared
batches, and completes those samples from there. And the probe: how fast each prepared batch
runs before LoadGen starts."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionbench.engines.base import Session
from visionbench.scenarios.mlperf.library import SampleLibrary

#: The probe before a run: per batch size, at least this many calls and seconds.
PROBE_CALLS = 5


PROBE_SECONDS = 0.5


@dataclass
class Probe:
    """Per prepared batch size, the median seconds of one call, timed before LoadGen starts: the
    expected latencies and throughput LoadGen asks to be told."""

    seconds: dict[int, float] = field(default_factory=dict)

    def throughput(self) -> float:
        b = max(self.seconds)
        return b / self.seconds[b]


def split(n: int, sizes: list[int]) -> list[int]:
    """``n`` samples as the fewest prepared batches (largest first): 13 over 1,2,4,8 -> 8,4,1."""
    out = []
    for b in sorted(sizes, reverse=True):
        while n >= b:
            out.append(b)
            n -= b
    return out


class SystemUnderTest:
    """Queues LoadGen's queries; one worker batches what is waiting and completes each sample."""

    def __init__(self, lg: Any, sessions: dict[int, Session], qsl: SampleLibrary,
                 max_batch: int, keep_top1: bool) -> None:
        self.lg, self.sessions, self.qsl, self.max_batch = lg, sessions, qsl, max_batch
        self.sizes = sorted(sessions)
        self.keep_top1 = keep_top1
        self.queue: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.worker = threading.Thread(target=self._work, name="visionbench-sut", daemon=True)
        self.worker.start()

    def issue_queries(self, samples: list[Any]) -> None:
        for s in samples:
            self.queue.put(s)

    def flush_queries(self) -> None:
        pass  # nothing is held back: the worker runs whatever is waiting

    def stop(self) -> None:
        self.queue.put(None)
        self.worker.join()

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
        session = self.sessions[len(samples)]
        try:
            x = np.concatenate([self.qsl.loaded[s.index] for s in samples])
            logits = session.run(session.feed(x))
        except BaseException as e:
            self.error = self.error or e
            logits = None
        responses, buffers = [], []
        for i, s in enumerate(samples):
            if self.keep_top1 and logits is not None:
                buf = np.asarray([int(np.argmax(logits[i]))], dtype=np.int32)
                buffers.append(buf)
                responses.append(self.lg.QuerySampleResponse(s.id, buf.ctypes.data, buf.nbytes))
            else:
                responses.append(self.lg.QuerySampleResponse(s.id, 0, 0))
        self.lg.QuerySamplesComplete(responses)


def probe(sessions: dict[int, Session], make: Callable[[int], np.ndarray]) -> Probe:
    """The median time of one call per batch size, after one warm-up call: at least
    PROBE_CALLS calls and PROBE_SECONDS of them."""
    out = Probe()
    for b, session in sessions.items():
        x = session.feed(np.concatenate([make(i) for i in range(b)]))
        session.run(x)
        times: list[float] = []
        while len(times) < PROBE_CALLS or sum(times) < PROBE_SECONDS:
            t0 = time.perf_counter()
            session.run(x)
            times.append(time.perf_counter() - t0)
        out.seconds[b] = float(np.median(times))
    return out
