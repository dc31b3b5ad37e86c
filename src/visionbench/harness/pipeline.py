"""The whole pipeline as a service runs it (``--mode pipeline``): ``threads`` workers decode and
preprocess images and put them on a bounded queue; one inference thread takes them off, forms a
batch, feeds it to the engine (numpy to the engine's tensor, the layout transpose), runs it and
post-processes its outputs. Each image is timed stage by stage on one clock, each stage between
its own two readings:

- decode: JPEG bytes (in memory, as a request brings them) to an RGB array
- preprocess: resize, crop, normalise, as the model's card says
- queue: from the image ready to the inference thread taking it (a full queue's wait included)
- batch: from taken to its batch complete (waiting for the batch's other images)
- feed: the batch stacked, laid out and handed to the engine
- inference: the engine's call
- postprocess: the outputs to answers (the batch's, counted for each of its images)

and end to end from its decode's start to its batch's post-processing's end. What falls between
two stages' readings is no stage's: ``accounted`` says how much of each image's end to end the
stages cover. The harness knows no engine: the scenario gives the stages as callables."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("decode", "preprocess", "queue", "batch", "feed", "inference", "postprocess")
#: The queue holds this many batches.
QUEUE_BATCHES = 2
#: Seconds a worker waits on a full queue before looking whether the run has stopped.
POLL = 0.05


@dataclass(frozen=True)
class Stages:
    """What each stage does: ``feed`` takes the batch's preprocessed images (a list)."""

    decode: Callable[[bytes], Any]
    preprocess: Callable[[Any], np.ndarray]
    feed: Callable[[list[np.ndarray]], Any]
    infer: Callable[[Any], Any]
    postprocess: Callable[[Any], Any]


@dataclass
class PipelineTiming:
    threads: int
    batch: int
    queue_size: int
    #: Per image, in the order the inference thread took them: milliseconds per stage.
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    end_to_end_ms: list[float] = field(default_factory=list)
    #: From the first decode's start to the last post-processing's end.
    seconds: float = 0.0
    batches: int = 0
    #: What post-processing returned, per batch.
    answers: list[Any] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.end_to_end_ms)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def accounted(self) -> np.ndarray:
        """Per image, the stages' sum over its end to end."""
        total = np.sum([self.stage_ms[s] for s in STAGES], axis=0)
        return total / np.asarray(self.end_to_end_ms)


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def run_pipeline(blobs: Sequence[bytes], images: int, stages: Stages, threads: int, batch: int,
                 queue_batches: int = QUEUE_BATCHES) -> PipelineTiming:
    """``images`` requests (``blobs`` in turn) through the pipeline; each image's stage times."""
    if threads <= 0 or batch <= 0 or images <= 0 or not blobs:
        raise ValueError(f"threads, batch and images must be positive (got {threads}, {batch}, "
                         f"{images}) and there must be images")
    clock = time.perf_counter
    out = PipelineTiming(threads, batch, queue_batches * batch)
    ready: queue.Queue[Any] = queue.Queue(out.queue_size)
    jobs, lock, stop = itertools.count(), threading.Lock(), threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            while not stop.is_set():
                with lock:
                    i = next(jobs)
                if i >= images:
                    return
                t0 = clock()
                decoded = stages.decode(blobs[i % len(blobs)])
                t1 = clock()
                x = stages.preprocess(decoded)
                t2 = clock()
                if not put((t0, t1, t2, x)):
                    return
        except BaseException as e:  # the inference thread raises it
            put(_Failed(e))

    pool = [threading.Thread(target=worker, name=f"visionbench-preprocess-{n}", daemon=True)
            for n in range(threads)]
    first = clock()
    for t in pool:
        t.start()
    try:
        done = 0
        while done < images:
            items, taken = [], []
            for _ in range(min(batch, images - done)):
                item = ready.get()
                taken.append(clock())
                if isinstance(item, _Failed):
                    raise item.error
                items.append(item)
            formed = clock()
            f0 = clock()
            fed = stages.feed([x for *_, x in items])
            f1 = clock()
            r0 = clock()
            outputs = stages.infer(fed)
            r1 = clock()
            p0 = clock()
            out.answers.append(stages.postprocess(outputs))
            p1 = clock()
            for (t0, t1, t2, _), got in zip(items, taken, strict=True):
                for name, ms in zip(STAGES, (t1 - t0, t2 - t1, got - t2, formed - got, f1 - f0,
                                             r1 - r0, p1 - p0), strict=True):
                    out.stage_ms[name].append(ms * 1e3)
                out.end_to_end_ms.append((p1 - t0) * 1e3)
            done += len(items)
            out.batches += 1
        out.seconds = clock() - first
    finally:
        stop.set()
        for t in pool:
            t.join()
    return out


def inference_only(infer: Callable[[Any], Any], fed: Any, calls: int) -> list[float]:
    """``calls`` back-to-back calls of one fed batch, as ``run`` times inference: ms each."""
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        infer(fed)
        times.append((time.perf_counter() - t) * 1e3)
    return times
