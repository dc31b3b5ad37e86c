"""Each BF16 and INT8 measurement's fidelity to FP32: after its timed windows, the measured session
runs a fixed set of images (outside any timing) and its outputs are compared with the same
engine's FP32 outputs on the same images (``visionbench.fidelity``). The FP32 outputs come from
the FP32 measurement of the run, or, where the run has none, from an FP32 session prepared for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from visionbench import fidelity
from visionbench.data.images import Dataset, load_rgb
from visionbench.data.prepared import image_array
from visionbench.data.synthetic import model_images
from visionbench.engines import Engine, Session
from visionbench.models import registry
from visionbench.models.spec import ModelSpec
from visionbench.results import Fidelity, OutputFidelity

#: Images compared: enough for numerical fidelity; a real-weights classifier on real images gets
#: more, for its top-1 agreement.
IMAGES = 8
TASK_IMAGES = 64
#: Output values kept per engine as the FP32 reference (a RetinaNet image has 32 M): fewer images
#: where the outputs are large, never under one.
MAX_VALUES = 64 * 2**20
SEED = 20


class FidelityCheck:
    """The images, and each engine's FP32 outputs on them, for one run."""

    def __init__(self, model: ModelSpec, dataset: Dataset | None, seed: int) -> None:
        self.model = model
        self._references: dict[str, list[np.ndarray]] = {}
        entry = registry.find(model.name) if model.source == "built-in" else None
        seeded = entry is not None and entry.card.weights == "seeded"
        self._int8_min_snr_db = (entry.card.int8_min_snr_db if entry is not None else None
                                 ) or fidelity.MIN_SNR_DB
        self.task_reason: str | None = None
        if model.task == "other":
            self.task_reason = "the task is 'other': numerical fidelity only"
        elif seeded:
            self.task_reason = ("seeded weights: their classes, boxes and masks mean nothing; "
                                "numerical fidelity only")
        elif dataset is None:
            self.task_reason = "synthetic inputs: task fidelity needs real images (--data)"
        count = TASK_IMAGES if self.task_reason is None else IMAGES
        self.images = self._real(dataset, count) if dataset is not None else None
        if self.images is None or not len(self.images):
            self.images = model_images(model, count, seed + SEED)
            self.source = ("synthetic (seeded images: smooth random fields, each its own colour "
                           "and contrast)")
        else:
            self.source = f"{len(self.images)} images of {dataset.root}"  # type: ignore[union-attr]

    def _real(self, dataset: Dataset, count: int) -> np.ndarray | None:
        arrays = []
        for path in dataset.sample(len(dataset.items), SEED):
            if len(arrays) == count:
                break
            try:
                arrays.append(image_array(self.model, load_rgb(path)))
            except Exception:  # an unreadable image is skipped, as everywhere
                continue
        return np.stack(arrays) if arrays else None

    def collect(self, session: Session, batch: int, count: int | None = None) -> list[np.ndarray]:
        """``session``'s outputs on the images, in batches of ``batch`` (the last one padded with
        repeats, its padding dropped): ``count`` images, or as many as MAX_VALUES allow."""
        images = self.images
        total = len(images) if count is None else count
        parts: list[list[np.ndarray]] = []
        done = values = 0
        while done < total and (count is not None or values < MAX_VALUES or not done):
            chunk = images[done:min(done + batch, total)]
            padded = np.resize(chunk, (batch, *chunk.shape[1:])) if len(chunk) < batch else chunk
            outs = [np.asarray(o)[: len(chunk)].astype(np.float32) for o in session.outputs(padded)]
            parts.append(outs)
            done += len(chunk)
            values += sum(o.size for o in outs)
        return [np.concatenate(p) for p in zip(*parts, strict=True)]

    def outputs_of(self, make: Callable[[], Session], count: int | None = None) -> list[np.ndarray]:
        """The outputs of a session ``make`` prepares (at batch 1), then closes."""
        session = make()
        try:
            return self.collect(session, 1, count)
        finally:
            session.close()

    def has_reference(self, engine: str) -> bool:
        return engine in self._references

    def keep_reference(self, engine: str, outputs: list[np.ndarray]) -> None:
        self._references.setdefault(engine, outputs)

    def judge(self, engine: Engine, outputs: list[np.ndarray] | None,
              session: Callable[[], Session], fp32: Callable[[], Session], precision: str = ""
              ) -> Fidelity:
        """The fidelity of ``outputs`` of ``precision`` (else those of a session ``session``
        makes) to ``engine``'s FP32 outputs (else those of a session ``fp32`` makes)."""
        ref = self._references.get(engine.name)
        if ref is None:
            ref = self._references[engine.name] = self.outputs_of(fp32)
        n = len(ref[0])
        if outputs is None or len(outputs[0]) < n:
            outputs = self.outputs_of(session, n)
        return self.compare(ref, [o[:n] for o in outputs], precision)

    def compare(self, ref: list[np.ndarray], out: list[np.ndarray], precision: str = ""
                ) -> Fidelity:
        """``out`` against FP32's ``ref``; outputs of a lower ``precision`` that are FP32's bit
        for bit are a contradiction: that precision did not run."""
        names = self.model.outputs or (self.model.output_name,)
        numeric = [fidelity.numeric(name, r, o) for name, r, o in zip(names, ref, out, strict=True)]
        least = self._int8_min_snr_db if precision == "int8" else fidelity.MIN_SNR_DB
        flags = [f"output {x.output}: SNR {x.snr_db:.1f} dB, under {least:.0f} dB"
                 for x in numeric if x.snr_db is not None and x.snr_db < least]
        identical = all(np.array_equal(r, o) for r, o in zip(ref, out, strict=True))
        if identical and precision not in ("", "fp32"):
            flags.insert(0, f"the outputs are FP32's bit for bit: {precision.upper()} did not run")
        task: dict[str, float | None] = {}
        reason = self.task_reason
        if reason is None:
            task, reason = self._task(ref, out)
            flags += _task_flags(task)
        return Fidelity(
            images=len(ref[0]), inputs=self.source,
            outputs=[OutputFidelity(output=x.output, rel_error=x.rel_error,
                                    snr_db=None if x.snr_db == float("inf") else x.snr_db)
                     for x in numeric],
            task=task, task_reason=reason, flags=flags, min_snr_db=least,
            contradiction=identical and precision not in ("", "fp32"))

    def _task(self, ref: list[np.ndarray], out: list[np.ndarray]
              ) -> tuple[dict[str, float | None], str | None]:
        model = self.model
        names = list(model.outputs or (model.output_name,))
        primary = names.index(model.output_name) if model.output_name in names else 0
        if model.task == "classification":
            return fidelity.classification(ref[primary], out[primary]), None
        if model.task == "segmentation":
            maps = next((i for i, r in enumerate(ref) if r.ndim == 4), None)
            if maps is None:
                return {}, "no 4-D class-map output"
            return fidelity.segmentation(ref[maps], out[maps]), None
        boxes = next((i for i, r in enumerate(ref) if r.ndim == 3 and r.shape[-1] == 4), None)
        scores = next((i for i, r in enumerate(ref) if r.ndim == 3 and i != boxes), None)
        if boxes is None or scores is None:
            return {}, ("detection fidelity reads boxes [N, A, 4] and class scores [N, A, classes]; "
                        "this model's outputs are otherwise")
        return fidelity.detection((ref[boxes], ref[scores]), (out[boxes], out[scores])), None


def _task_flags(task: dict[str, float | None]) -> list[str]:
    rules = (("top1_agreement", fidelity.MIN_TOP1_AGREEMENT, "top-1 agreement"),
             ("boxes_kept", fidelity.MIN_BOXES_KEPT, "FP32's boxes kept"),
             ("pixel_agreement", fidelity.MIN_PIXEL_AGREEMENT, "pixel agreement"))
    return [f"{what} {task[key]:.1%}, under {limit:.0%}" for key, limit, what in rules
            if task.get(key) is not None and task[key] < limit]  # type: ignore[operator]
