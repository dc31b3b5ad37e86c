"""A model added in a test is one registration: `run` and `export` take it on every engine that can
run what it declares; the others record it unsupported with the reason."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import visionbench
from visionbench.cli import cli
from visionbench.engines import SessionSpec
from visionbench.errors import VisionbenchError
from visionbench.models import registry
from visionbench.models.registry import ModelCard

from conftest import ENGINE_NAMES, ONNX_ENGINES

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def toy_graph(seed: int) -> onnx.ModelProto:
    """Conv 3x3 (3 -> 8) + ReLU, global average pool, linear to 10 classes, 32x32 input."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [w, b, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


TOY = ModelCard(name="toy", task="classification", summary="a test's toy classifier",
                params=8 * 27 + 8 + 80, gflop_per_image=2 * (32 * 32 * 8 * 27 + 80) / 1e9,
                num_classes=10, height=32, width=32)


@pytest.fixture
def toy() -> Iterator[str]:
    registry.register(TOY)(toy_graph)
    yield TOY.name
    registry.unregister(TOY.name)


def test_registered_model_runs_on_every_engine_that_can(toy, tmp_path):
    r = visionbench.run(model=toy, engines="all", precisions=["fp32", "int8"], modes=["latency"],
                        iterations=5, repeats=1, warmup=1, calibration_samples=8,
                        output=tmp_path / "run")
    assert r.status == "complete" and r.model.name == "toy" and r.model.source == "built-in"
    by_engine = {e: [m for m in r.measurements if m.engine == e] for e in ENGINE_NAMES}
    for engine in ONNX_ENGINES:
        assert [m.status for m in by_engine[engine]] == ["ok", "ok"], by_engine[engine]
        assert all(m.executed_precision == m.precision for m in by_engine[engine])
    for engine, framework in (("torch", "PyTorch"), ("torch-eager", "PyTorch"),
                              ("tensorflow", "Keras")):
        for m in by_engine.get(engine, []):
            assert m.status == "unsupported"
            assert m.reason == f"toy has no {framework} definition in visionbench (ONNX only)"


def test_registered_model_is_listed_and_exported(toy, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(cli, ["models"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("│ toy "))
    assert "classification" in row and "3x32x32" in row and "seeded" in row
    assert all(e in row for e in ONNX_ENGINES) and "torch" not in row and "tensorflow" not in row
    out = tmp_path / "toy.onnx"
    exported = runner.invoke(cli, ["export", "--model", toy, "--output", str(out), "--seed", "3"])
    assert exported.exit_code == 0, exported.output
    assert onnx.load(str(out)).SerializeToString() == toy_graph(3).SerializeToString()


def test_named_engine_without_a_definition_is_refused(toy, tmp_path):
    if "torch" not in ENGINE_NAMES:
        pytest.skip("needs the torch engine")
    with pytest.raises(VisionbenchError, match="no PyTorch definition"):
        visionbench.run(model=toy, engines="torch", output=tmp_path / "run")


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_registered_torch_module_runs_on_torch(tmp_path):
    import io

    import torch

    def module(spec: object = None) -> tuple[torch.nn.Module, str]:
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10))
        return m.eval(), "the test's torch.nn.Sequential"

    def build(seed: int) -> onnx.ModelProto:
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
            warnings.simplefilter("ignore")
            torch.onnx.export(module()[0], torch.zeros(1, 3, 32, 32), buf, input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
        return onnx.load_from_string(buf.getvalue())

    card = ModelCard(name="toy-torch", task="classification", summary="toy with a torch module",
                     params=306, gflop_per_image=0.0004, num_classes=10, height=32, width=32,
                     torch_module=module)
    registry.register(card)(build)
    try:
        engines = [e for e in ("torch-eager", "onnxruntime") if e in ENGINE_NAMES]
        r = visionbench.run(model="toy-torch", engines=engines, precisions=["fp32"],
                            modes=["latency"], iterations=5, repeats=1, warmup=1,
                            output=tmp_path / "run")
        assert [m.status for m in r.measurements] == ["ok"] * len(engines)
        torch_m = next(m for m in r.measurements if m.engine == "torch-eager")
        assert torch_m.engine_details["definition"] == "the test's torch.nn.Sequential"
        # the same function in both frameworks
        from visionbench.data.calibration import synthetic_calibration
        from visionbench.engines import get_engine
        from visionbench.models import resolve

        spec = resolve("toy-torch")
        x = np.random.default_rng(1).standard_normal((4, 3, 32, 32), dtype=np.float32)
        cal = synthetic_calibration(spec, 4)
        outs = [get_engine(e).prepare(SessionSpec(spec, "fp32", 1, cal, 4)).predict(x) for e in engines]
        np.testing.assert_allclose(outs[0], outs[-1], rtol=1e-4, atol=1e-5)
    finally:
        registry.unregister("toy-torch")
