"""Accuracy at every precision, on real images: top-1 and top-5 against the labels, each
precision's top-1 agreement with the same engine's FP32, and MLPerf's rule (a lower precision
keeps at least 99% of FP32's top-1)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.config import RunConfig
from visionbench.data.prepared import Prepared, prepare_images
from visionbench.data.preprocess import get_preprocess
from visionbench.engines import Precision
from visionbench.fsutil import atomic_write_text
from visionbench.reporter import Reporter
from visionbench.results import Accuracy
from visionbench.results.schema import accuracy_key
from visionbench.scenarios.plan import plan_tasks
from visionbench.scenarios.scenario import Scenario, Setup, Skip, Task

MLPERF_RATIO = 0.99
#: Images per inference call when measuring accuracy (``--batch-size`` overrides).
ACCURACY_BATCH = 32


def top5(logits: np.ndarray, label_offset: int) -> np.ndarray:
    """The five highest classes per row, as ImageNet indices (a background class removed)."""
    order = np.argsort(-logits, axis=1)[:, :5]
    return order - label_offset


def scores(pred: np.ndarray, labels: np.ndarray | None, fp32_top1: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"top1": None, "top5": None, "agreement_with_fp32": None}
    if labels is not None:
        out["top1"] = float((pred[:, 0] == labels).mean())
        out["top5"] = float((pred == labels[:, None]).any(axis=1).mean())
    if fp32_top1 is not None:
        out["agreement_with_fp32"] = float((pred[:, 0] == fp32_top1).mean())
    return out


def mlperf_rule(top1: float | None, fp32_top1: float | None) -> str | None:
    if top1 is None or fp32_top1 is None:
        return None
    return "pass" if top1 >= MLPERF_RATIO * fp32_top1 else "fail"


def write_predictions(directory: Path, name: str, paths: list[Path], pred: np.ndarray) -> str:
    rel = f"raw/accuracy-{name}.json"
    atomic_write_text(directory / rel, json.dumps(
        {"top5": {str(p): [int(c) for c in row] for p, row in zip(paths, pred, strict=True)}}))
    return rel


class AccuracyScenario(Scenario[Accuracy]):
    """Every engine x precision over the data set, FP32 first as each engine's reference."""

    def __init__(self) -> None:
        self.images: Prepared | None = None
        self.batch = 0
        #: Each engine's FP32 top-1 per image and its top-1 score.
        self.reference: dict[str, tuple[np.ndarray, float | None]] = {}

    def tasks(self, setup: Setup, reporter: Reporter) -> Sequence[Task]:
        cfg, dataset, model = setup.cfg, setup.dataset, setup.model
        assert dataset is not None
        precisions: list[Precision] = ["fp32", *[p for p in cfg.study.precisions if p != "fp32"]]
        tasks = plan_tasks(cfg.replace(modes=["latency"], methods=["reference"],
                                       precisions=precisions), setup.engines, model)
        images = self.images = prepare_images(model, dataset)
        self.batch = min(cfg.study.batch_size or ACCURACY_BATCH, len(images.paths))
        setup.store.results.data = {
            "root": str(dataset.root), "layout": dataset.layout, "images": len(images.paths),
            "labelled": images.labels is not None, "limit": cfg.inputs.limit,
            "unreadable": [f"{p}: {why}" for p, why in dataset.skipped],
            "preprocessing": get_preprocess(model.preprocessing).description,
            "decode_and_preprocess_seconds": round(images.seconds, 3),
        }
        if dataset.skipped:
            reporter.note(f"warning: {len(dataset.skipped)} of {len(dataset.items)} images could not "
                          "be read and were skipped (listed in results.json under data.unreadable)")
        setup.store.save()
        return tasks

    def describe(self, task: Task) -> str:
        return f"accuracy {task.engine} {task.precision}"

    def key(self, task: Task) -> str:
        return accuracy_key(task.engine, task.precision)

    def keys(self, cfg: RunConfig, tasks: list[Task]) -> list[str]:
        precisions = ["fp32", *[p for p in cfg.study.precisions if p != "fp32"]]
        return [accuracy_key(e, p) for e in cfg.study.engines for p in precisions]

    def widen(self, todo: set[str], planned: list[str]) -> set[str]:
        """An engine's lower precisions are judged against its FP32 predictions of the same
        sitting: an engine with a record to make measures all of its records again."""
        engines = {k for k in planned if k in todo}
        return todo | {k for k in planned
                       if any(k.rsplit("-", 1)[0] == e.rsplit("-", 1)[0] for e in engines)}

    def unmeasured(self, task: Task, setup: Setup, status: str, reason: str) -> Accuracy:
        return Accuracy(engine=task.engine, precision=task.precision, status=status,  # type: ignore[arg-type]
                        reason=reason)

    def measure(self, task: Task, setup: Setup, reporter: Reporter) -> Accuracy:
        if task.precision != "fp32" and task.engine not in self.reference:
            raise Skip("no FP32 reference on this engine")
        images, batch, cfg, model = self.images, self.batch, setup.cfg, setup.model
        assert images is not None
        engine = setup.engines[task.engine]
        session = engine.prepare(cfg.spec(engine, model, task.precision, batch, setup.cal))
        try:
            t0 = time.perf_counter()
            outputs = []
            for i in range(0, len(images.arrays), batch):
                x = np.asarray(images.arrays[i: i + batch])
                n = len(x)
                if n < batch:  # engines compiled for a static batch: pad the last one, drop it
                    x = np.concatenate([x, np.repeat(x[-1:], batch - n, axis=0)])
                outputs.append(session.predict(x)[:n])
            logits = np.concatenate(outputs)
            seconds = time.perf_counter() - t0
        finally:
            session.close()
        pred = top5(logits, model.label_offset)
        fp32_top1, fp32_score = self.reference.get(task.engine, (None, None))
        sc = scores(pred, images.labels, fp32_top1)
        if task.precision == "fp32":
            self.reference[task.engine] = (pred[:, 0], sc["top1"])
        ex = session.execution
        return Accuracy(
            engine=task.engine, precision=task.precision, status="ok",
            executed_precision=ex.executed_precision, emulated=task.support.status == "emulated",
            quantized_ops=ex.quantized_ops, images=len(pred), **sc,
            mlperf_99=None if task.precision == "fp32" else mlperf_rule(sc["top1"], fp32_score),
            inference_seconds=round(seconds, 3),
            predictions=write_predictions(setup.store.dir, f"{task.engine}-{task.precision}",
                                          images.paths, pred),
        )

    def add(self, setup: Setup, record: Accuracy, reporter: Reporter) -> None:
        setup.store.add(record)
        if record.status == "ok":
            top1 = f"top-1 {record.top1:.2%}" if record.top1 is not None else "no labels"
            reporter.note(f"accuracy {record.engine} {record.precision}: {top1}")

    def close(self) -> None:
        if self.images is not None:
            self.images.close()
