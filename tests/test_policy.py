"""The run's policy on precisions an engine cannot run natively: error when named, skip with a
reason by default, measure marked emulated only with --allow-emulated."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbench.config import RunConfig
from visionbench.engines.base import Engine, Support
from visionbench.errors import VisionbenchError
from visionbench.models.spec import ModelSpec
from visionbench.scenarios.plan import plan_tasks


class EmulatesBF16(Engine):
    """An engine whose capability check says BF16 is emulated and FP8-like things unsupported."""

    name = "emulates-bf16"
    module = "numpy"
    extra = "none"

    def versions(self):
        return {}

    def support(self, precision, cpu):
        if precision == "bf16":
            return Support("emulated", "no native BF16 here")
        if precision == "int8":
            return Support("unsupported", "no INT8 kernels")
        return Support("native")

    def prepare(self, *args, **kwargs):
        raise AssertionError("planning never prepares a model")


def spec(fmt="onnx") -> ModelSpec:
    return ModelSpec(name="m", path=Path("m.pb"), input_name="x", layout="NHWC", channels=3, height=8,
                     width=8, fixed_batch=None, output_name="y", num_classes=10, source="file",
                     sha256="0" * 64, format=fmt)


def plan(fmt="onnx", **kw):
    cfg = RunConfig.of(engines=["emulates-bf16"], **kw)
    return plan_tasks(cfg, {"emulates-bf16": EmulatesBF16()}, spec(fmt))


def test_named_emulated_precision_is_an_error():
    with pytest.raises(VisionbenchError, match=r"would be emulated.*--allow-emulated"):
        plan(precisions=["bf16"], precisions_explicit=True)


def test_allow_emulated_measures_it_marked():
    tasks = plan(precisions=["bf16"], precisions_explicit=True, allow_emulated=True)
    assert {t.support.status for t in tasks} == {"emulated"} and len(tasks) == 2


def test_named_unsupported_precision_is_an_error_even_when_emulation_is_allowed():
    with pytest.raises(VisionbenchError, match="cannot run int8 here: no INT8 kernels"):
        plan(precisions=["int8"], precisions_explicit=True, allow_emulated=True)


def test_default_precisions_keep_every_slot_with_its_verdict():
    tasks = plan()
    assert [(t.precision, t.support.status) for t in tasks if t.mode == "latency"] == [
        ("fp32", "native"), ("bf16", "emulated"), ("int8", "unsupported")]


def test_a_named_engine_that_cannot_read_the_model_format_is_an_error():
    with pytest.raises(VisionbenchError, match=r"runs onnx models; m\.pb is a tensorflow model"):
        plan("tensorflow")


def test_engine_all_records_the_format_it_cannot_read_as_unsupported():
    tasks = plan("tensorflow", engines_explicit=False)
    assert len(tasks) == 6 and {t.support.status for t in tasks} == {"unsupported"}
    assert "is a tensorflow model" in tasks[0].support.reason
