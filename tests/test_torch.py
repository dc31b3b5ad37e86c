"""PyTorch engine: torchvision-compatible ResNet-50, the same function as the other engines,
the three precisions, user checkpoints and their errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import ENGINE_NAMES

torch = pytest.importorskip("torch")

from visionbench.data.calibration import synthetic_calibration  # noqa: E402
from visionbench.engines import SessionSpec, get_engine  # noqa: E402
from visionbench.errors import VisionbenchError  # noqa: E402
from visionbench.models import resolve  # noqa: E402
from visionbench.models.resnet50 import RESNET50, RESNET50_TINY, config_from_weights  # noqa: E402
from visionbench.models.torch_resnet import ResNet, load_checkpoint  # noqa: E402
from visionbench.sysinfo import cpu_features  # noqa: E402

# torchvision's resnet50().state_dict() has 320 entries: 53 convolutions, 53 batch norms of 5
# tensors each (num_batches_tracked included), and fc.weight, fc.bias.
TORCHVISION_KEYS = 320


def prepared(engine, model, precision, batch=8, n_calib=32):
    cal = synthetic_calibration(model, n_calib)
    return get_engine(engine).prepare(SessionSpec(model, precision, 2, cal, batch))


def test_state_dict_keys_are_torchvision_s():
    sd = ResNet(RESNET50).state_dict()
    assert len(sd) == TORCHVISION_KEYS
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) \
        == 25_557_032
    assert tuple(sd["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)
    assert "layer4.0.downsample.1.running_var" in sd


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", ["resnet50-tiny", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_same_function_on_every_engine(name):
    """FP32 logits of torch (eager), OpenVINO and ONNX Runtime on the same inputs."""
    spec = resolve(name)
    x = np.random.default_rng(11).standard_normal(spec.input_shape(2), dtype=np.float32)
    ref = prepared("torch-eager", spec, "fp32", batch=2).predict(x)
    assert np.isfinite(ref).all()
    for engine in ENGINE_NAMES:
        if engine.startswith("torch"):
            continue
        assert _relative(prepared(engine, spec, "fp32", batch=2).predict(x), ref) < 1e-3, engine


@pytest.mark.slow
def test_compiled_fp32_and_pt2e_int8(tiny, tiny_inputs):
    ref = prepared("torch-eager", tiny, "fp32").predict(tiny_inputs[:8])
    fp32 = prepared("torch", tiny, "fp32")
    assert fp32.execution.executed_precision == "fp32"
    assert fp32.execution.details["configuration"].startswith("torch.compile")
    assert fp32.execution.details["first_run_seconds"] > 0  # compile time, kept out of timing
    assert _relative(fp32.predict(tiny_inputs[:8]), ref) < 1e-3
    int8 = prepared("torch", tiny, "int8")
    ex = int8.execution
    assert ex.details["quantizer"].startswith("PT2E"), ex.details["quantizer"]
    assert ex.executed_precision == "int8" and ex.quantized_ops == 18  # 17 convs + fc
    assert any(":u8:" in k or ":s8:" in k for k in ex.layer_precisions), ex.layer_precisions
    assert ex.details["intra_op_threads"] == 2 and ex.details["inter_op_threads"] == 1
    got = np.concatenate([int8.predict(tiny_inputs[i: i + 8]) for i in range(0, 32, 8)])
    full_ref = np.concatenate(
        [prepared("torch-eager", tiny, "fp32").predict(tiny_inputs[i: i + 8]) for i in range(0, 32, 8)])
    assert (got.argmax(1) == full_ref.argmax(1)).mean() >= 0.6


def test_bf16_runs_and_agrees(tiny, tiny_inputs):
    support = get_engine("torch-eager").support("bf16", cpu_features())
    assert support.status == ("native" if cpu_features().bf16 else "emulated")
    s = prepared("torch-eager", tiny, "bf16")
    assert s.execution.executed_precision == "bf16"
    ref = prepared("torch-eager", tiny, "fp32").predict(tiny_inputs[:16])
    assert (s.predict(tiny_inputs[:16]).argmax(1) == ref.argmax(1)).mean() >= 0.7
    if cpu_features().bf16:
        assert any(":bf16:" in k for k in s.execution.layer_precisions)


def test_eager_int8_is_unsupported_not_faked():
    s = get_engine("torch-eager").support("int8", cpu_features())
    assert s.status == "unsupported" and "--engine torch" in s.reason


def test_torch_refuses_non_resnet_models(tmp_path):
    from conftest import small_onnx

    spec = resolve(str(small_onnx(tmp_path / "m.onnx", ["N", 3, 32, 32])))
    with pytest.raises(VisionbenchError, match=r"ResNet-50 v1\.5 weights"):
        prepared("torch-eager", spec, "fp32")


def test_config_from_weights(tiny):
    from visionbench.models import onnx_weights

    assert config_from_weights(onnx_weights(tiny), 64) == RESNET50_TINY
    arrays = onnx_weights(tiny)
    arrays.pop("fc.bias")
    assert config_from_weights(arrays, 64) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A torchvision-style checkpoint with weights unlike the built-in seeded ones."""
    torch.manual_seed(5)
    module = ResNet(RESNET50)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
            m.weight.data.uniform_(0.1, 0.3)  # keep activations tame through 16 blocks
    path = tmp_path_factory.mktemp("ckpt") / "resnet50.pth"
    torch.save(module.state_dict(), path)
    return path, module.eval()


@pytest.mark.slow
def test_checkpoint_weights_reach_every_engine(checkpoint):
    path, module = checkpoint
    spec = resolve(weights=path)
    assert spec.source == "weights" and spec.sha256 != resolve("resnet50").sha256
    x = np.random.default_rng(2).standard_normal(spec.input_shape(1), dtype=np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    for engine in ENGINE_NAMES:
        if engine == "torch":
            continue  # compiled: same module, covered on the tiny model
        assert _relative(prepared(engine, spec, "fp32", batch=1).predict(x), want) < 1e-3, engine


def test_bad_checkpoints(tmp_path, checkpoint):
    good = torch.load(checkpoint[0], weights_only=True)
    cases = {
        "list": ([1, 2, 3], "is not a state_dict"),
        "missing": ({k: v for k, v in good.items() if k != "layer3.2.bn2.weight"},
                    "missing key 'layer3.2.bn2.weight'"),
        "unexpected": ({**good, "head.weight": torch.zeros(3)}, "unexpected key 'head.weight'"),
        "shape": ({**good, "fc.weight": torch.zeros(10, 2048)},
                  "'fc.weight' has shape (10, 2048)"),
    }
    for name, (obj, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        with pytest.raises(VisionbenchError, match=re.escape(message)):
            load_checkpoint(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VisionbenchError, match="cannot load weights"):
        load_checkpoint(junk)
    with pytest.raises(VisionbenchError, match="weights file not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_export_with_weights_cli(tmp_path, checkpoint):
    """`visionbench export --weights` writes the ONNX file that carries the checkpoint."""
    import subprocess
    import sys

    import onnxruntime as ort

    path, module = checkpoint
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "visionbench", "export", "--weights", str(path), "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(4).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert _relative(got, want) < 1e-3
