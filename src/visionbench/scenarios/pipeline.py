"""``--mode pipeline``: the gap between a benchmark and an application. Each engine and
precision runs, in a fresh process of its own, the whole pipeline a service runs: JPEG bytes
decoded (the fastest decoder installed: ``data.decode``), resized and normalised as the model's
card says on ``--pipeline-threads`` worker threads, a bounded queue, batches of
``--pipeline-batch`` formed from it, fed to the engine (stacked, laid out), run, and
post-processed (``data.postprocess``: softmax and top-5, per-class NMS, an argmax mask); each
image timed stage by stage (``harness.pipeline``). Inference alone is timed in the same session
on the same batch, half before the pipeline's passes and half after, beside it."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionbench.config import RunConfig
from visionbench.data import decode, postprocess
from visionbench.data.preprocess import get_preprocess, laid_out, resized
from visionbench.engines import get_engine
from visionbench.errors import VisionbenchError
from visionbench.harness.pipeline import STAGES, PipelineTiming, Stages, inference_only, run_pipeline
from visionbench.launch.protocol import Result
from visionbench.models import registry
from visionbench.models.spec import ModelSpec
from visionbench.reporter import Reporter
from visionbench.results import now
from visionbench.results.schema import (
    Percentiles,
    PipelineRun,
    PipelineThreads,
    Spread,
    pipeline_key,
)
from visionbench.scenarios.fresh import EngineJob, PerEngine, in_fresh_process
from visionbench.scenarios.plan import study_calibration
from visionbench.scenarios.scenario import Setup, Task

#: Images per pass (``--iterations`` overrides; ``--quick``: ``QUICK_IMAGES``), after ``WARMUP``
#: untimed inferences and a short untimed pass (``--warmup`` sets both).
IMAGES = 200
QUICK_IMAGES = 40
WARMUP = 5
#: Inference alone is timed half before the pipeline's passes, half after: a median that moved
#: by more than this share between the two is noted.
DRIFT = 0.10
#: Seconds one process may take (INT8 quantization included).
TIMEOUT = 1800.0


@dataclass
class Job(EngineJob):
    images: int
    warmup: int
    paths: list[Path]
    decoder: str


def percentiles(values: list[float]) -> Percentiles:
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return Percentiles(p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
                       mean_ms=float(np.mean(values)))


def spread(values: list[float]) -> Spread:
    return Spread(median=float(statistics.median(values)), min=float(min(values)),
                  max=float(max(values)))


def summary(t: PipelineTiming, task: str) -> PipelineThreads:
    """One pass's record: percentiles per stage and end to end, images per second."""
    found = [pair for answers in t.answers for pair in answers] if task == "detection" else []
    return PipelineThreads(
        threads=t.threads, images=t.images, batches=t.batches, queue_size=t.queue_size,
        images_per_second=t.images_per_second, end_to_end=percentiles(t.end_to_end_ms),
        stages={s: percentiles(t.stage_ms[s]) for s in STAGES},
        accounted=spread(t.accounted().tolist()),
        candidates=spread([float(r) for _, r in found]) if found else None,
        detections=spread([float(k) for k, _ in found]) if found else None)


def pipeline_one(conn: Connection, job: Job) -> None:
    """The fresh process (``launch.child``'s target): inference alone, then a pass of the whole
    pipeline per thread count, on one session."""
    cfg, model = job.cfg, job.model
    engine = get_engine(job.engine)
    cal, _ = study_calibration(cfg, model, job.dataset)
    batch = cfg.study.pipeline_batch
    model.check_batch(batch)
    dec = decode.decoder(job.decoder)
    blobs = decode.read_jpegs(job.paths, dec)
    prep = get_preprocess(cfg.inputs.preprocess or model.preprocessing)
    post, _ = postprocess.for_task(model.task)
    session = engine.prepare(cfg.spec(engine, model, job.precision, batch, cal))
    try:
        def feed(xs: list[np.ndarray]) -> Any:
            return session.feed(laid_out(np.stack(xs), model.layout))

        stages = Stages(dec.decode, lambda rgb: resized(Image.fromarray(rgb), prep, model.height),
                        feed, session.run_outputs, post)
        fed = feed([stages.preprocess(dec.decode(blobs[i % len(blobs)])) for i in range(batch)])
        try:
            post(session.run_outputs(fed))
        except NotImplementedError as e:
            conn.send(Result({"unsupported": str(e)}))
            return
        for _ in range(job.warmup):
            session.run_outputs(fed)
        run_pipeline(blobs, max(job.warmup, 1) * batch, stages, max(cfg.study.pipeline_threads),
                     batch)
        calls = math.ceil(job.images / batch)
        before = inference_only(session.run_outputs, fed, math.ceil(calls / 2))
        runs = [summary(run_pipeline(blobs, job.images, stages, n, batch), model.task)
                for n in cfg.study.pipeline_threads]
        after = inference_only(session.run_outputs, fed, max(calls // 2, 1))
    finally:
        session.close()
    conn.send(Result({"before_ms": before, "after_ms": after, "runs": runs}))


def weights(cfg: RunConfig, model: ModelSpec) -> str:
    """The weights the model ran with, in words: seeded ones say they are not trained."""
    if cfg.study.weights is not None:
        return f"the user's weights {cfg.study.weights}"
    entry = registry.find(model.name) if model.source == "built-in" else None
    if entry is None:
        return f"the user's model file {model.path.name}"
    if entry.card.weights == "seeded":
        return (f"seeded, untrained (--seed {cfg.study.seed}): outputs are not a trained model's"
                + (", so how many candidates pass the score threshold and reach NMS differs from "
                   "a trained detector's on the same photos" if model.task == "detection" else ""))
    return entry.card.weights_source


class PipelineScenario(PerEngine[PipelineRun]):
    """Each engine x precision running the whole pipeline in a fresh process."""

    record = PipelineRun
    record_key = staticmethod(pipeline_key)

    def __init__(self, in_suite: bool = False) -> None:
        super().__init__(in_suite)
        self.images: dict[str, tuple[list[Path], str, int]] = {}

    def check(self, setup: Setup) -> None:
        """The photos read and decoded once: an unreadable one stops the run before any
        measurement."""
        self.photos(setup)

    def photos(self, setup: Setup) -> tuple[list[Path], str, int]:
        """The photos (``--data``'s, else the shipped ones), what they are, how many; each read
        and decoded once to check it."""
        key = str(setup.dataset.root) if setup.dataset is not None else ""
        if key not in self.images:
            dec = decode.best()
            if setup.dataset is not None:
                paths = [p for p, _ in setup.dataset.items]
                what = f"--data {setup.dataset.root}: {len(paths)} JPEG files"
            else:
                paths = decode.photos()
                what = (f"the {len(paths)} shipped photos ({', '.join(p.name for p in paths)}; "
                        "public domain / CC0, from scikit-image's data)")
            decode.read_jpegs(paths, dec)
            self.images[key] = (paths, what, len(paths))
        return self.images[key]

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> PipelineRun:
        cfg, model, started = setup.cfg, setup.model, now()
        if model.height != model.width:
            raise VisionbenchError(f"the pipeline preprocesses square inputs; {model.name} takes "
                                   f"{model.height}x{model.width}")
        images = cfg.timing.iterations or (QUICK_IMAGES if cfg.timing.quick else IMAGES)
        warmup = WARMUP if cfg.timing.warmup is None else cfg.timing.warmup
        paths, what, count = self.photos(setup)
        dec = decode.best()
        step = reporter.steps(self.key(task), 1)
        if step:
            step(0, f"{images} images per pass, threads {cfg.study.pipeline_threads}, in a fresh "
                    "process")
        job = Job(cfg, model, setup.dataset, task.engine, task.precision, images, warmup, paths,
                  dec.name)
        value = in_fresh_process("visionbench.scenarios.pipeline:pipeline_one", job, task.engine,
                                 TIMEOUT)
        if step:
            step(1, "done")
        if "unsupported" in value:
            return self.unmeasured(task, setup, "unsupported", f"{task.engine}: "
                                   f"{value['unsupported']}")
        batch = cfg.study.pipeline_batch
        alone = value["before_ms"] + value["after_ms"]
        notes = [dec.fallback] if dec.fallback else []
        drift = statistics.median(value["after_ms"]) / statistics.median(value["before_ms"])
        if abs(drift - 1) > DRIFT:
            notes.append(f"inference alone took {drift:.2f}x as long after the pipeline's passes "
                         "as before them: the machine's speed moved during the run")
        return PipelineRun(
            engine=task.engine, precision=task.precision, model=task.model if self.in_suite else None,
            status="ok", batch_size=batch, task=model.task, decoder=dec.label,
            decoder_note=dec.fallback, images_source=what, photos=count,
            preprocessing=get_preprocess(cfg.inputs.preprocess or model.preprocessing).description,
            postprocessing=postprocess.for_task(model.task)[1], weights=weights(cfg, model),
            inference_only_ips=batch * len(alone) / (sum(alone) / 1e3),
            inference_only=percentiles(alone), runs=value["runs"], notes=notes,
            started_at=started, finished_at=now())

    def summary(self, record: PipelineRun) -> str:
        passes = "; ".join(f"{r.threads} thread(s) {r.images_per_second:.1f} images/s, p50 "
                           f"{r.end_to_end.p50_ms:.2f} ms" for r in record.runs)
        return (f"end to end {passes}; inference alone {record.inference_only_ips:.1f} images/s "
                f"({record.decoder})")
