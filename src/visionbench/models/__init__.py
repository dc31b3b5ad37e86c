"""Model registry: built-in models by name, or any image-classification ONNX file by path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_bytes, cache_dir
from visionbench.models import efficientnet
from visionbench.models.onnx_graph import build_onnx
from visionbench.models.resnet50 import RESNET50, RESNET50_TINY, ResNetConfig, macs, seeded_weights
from visionbench.models.spec import ModelSpec, read_onnx

#: Built-in ResNets by name. ``resnet50-tiny`` is a reduced variant for tests and smoke runs.
BUILTIN: dict[str, ResNetConfig] = {"resnet50": RESNET50, "resnet50-tiny": RESNET50_TINY}
#: Every built-in model: the ResNets and EfficientNet-Lite0 with real ImageNet weights.
BUILTIN_NAMES = (*BUILTIN, efficientnet.NAME)
DEFAULT_MODEL = "resnet50"
DEFAULT_SEED = 0
#: Bump when the builder's output changes, so stale cached files are not reused.
BUILDER_REVISION = 1


def builtin_path(name: str, seed: int = DEFAULT_SEED) -> Path:
    cfg = BUILTIN[name]
    return cache_dir() / "models" / f"{name}-v1.5-{cfg.tag}-seed{seed}-r{BUILDER_REVISION}.onnx"


def build_builtin(name: str, seed: int = DEFAULT_SEED) -> Path:
    """The built-in model's ONNX file, built once and cached."""
    path = builtin_path(name, seed)
    if not path.exists():
        cfg = BUILTIN[name]
        sd = seeded_weights(cfg, seed)
        doc = f"visionbench {name}: ResNet-50 v1.5 topology {cfg.tag}, seeded weights (seed {seed})"
        model = build_onnx(sd, cfg, doc)
        atomic_write_bytes(path, model.SerializeToString())
    return path


def from_checkpoint(weights: Path) -> Path:
    """The ONNX file of ResNet-50 v1.5 carrying a user's torchvision checkpoint, built once."""
    from visionbench.fsutil import file_sha256

    if not weights.is_file():
        raise VisionbenchError(f"weights file not found: {weights}")
    digest = file_sha256(weights)[:16]
    path = cache_dir() / "models" / f"resnet50-v1.5-weights-{digest}-r{BUILDER_REVISION}.onnx"
    if not path.exists():
        try:
            from visionbench.models.torch_resnet import load_checkpoint, numpy_state_dict
        except ImportError as e:
            raise VisionbenchError(
                "--weights needs PyTorch to read the checkpoint: pip install 'visionbench[torch]'"
            ) from e
        sd = numpy_state_dict(load_checkpoint(weights))
        doc = f"visionbench resnet50: ResNet-50 v1.5 with the weights of {weights.name}"
        atomic_write_bytes(path, build_onnx(sd, RESNET50, doc).SerializeToString())
    return path


def resolve(
    model: str | None = None, seed: int = DEFAULT_SEED, weights: Path | None = None,
    input_name: str | None = None, output_name: str | None = None, threads: int | None = None,
) -> ModelSpec:
    """A built-in name (built on first use), a path to the user's ONNX or TensorFlow model, or
    ResNet-50 weights: a torchvision checkpoint (run by every engine) or TensorFlow's own file.
    ``input_name``/``output_name`` pick tensors of a TensorFlow model; ``threads`` are the run's
    (TensorFlow fixes its thread pools when it first reads a model)."""
    from visionbench.models.tensorflow_files import is_tensorflow_path, read_tensorflow

    tf_file = (weights is not None and is_tensorflow_path(weights)) or (
        weights is None and model not in (None, *BUILTIN_NAMES) and is_tensorflow_path(Path(str(model))))
    if (input_name or output_name) and not tf_file:
        raise VisionbenchError("--input-name and --output-name pick tensors of a TensorFlow model file")
    if weights is not None:
        if model not in (None, DEFAULT_MODEL):
            raise VisionbenchError("--weights is a ResNet-50 checkpoint: use it without --model")
        if tf_file:
            return with_label_convention(read_tensorflow(
                weights, input_name, output_name, resnet50=True, source="weights", threads=threads))
        gflop = 2 * macs(RESNET50) / 1e9
        return read_onnx(from_checkpoint(weights), f"resnet50 ({weights.name})", "weights", gflop)
    model = model or DEFAULT_MODEL
    if model in BUILTIN:
        gflop = 2 * macs(BUILTIN[model]) / 1e9
        return read_onnx(build_builtin(model, seed), model, "built-in", gflop)
    if model == efficientnet.NAME:
        spec = read_onnx(efficientnet.build(), model, "built-in", efficientnet.GFLOP_PER_IMAGE)
        return replace(spec, preprocessing="efficientnet-lite")
    if tf_file:
        return with_label_convention(read_tensorflow(Path(model), input_name, output_name, threads=threads))
    return with_label_convention(read_onnx(Path(model)))


def with_label_convention(spec: ModelSpec) -> ModelSpec:
    """A 1001-class model is a TensorFlow-slim/MLPerf ResNet (class 0 = background), prepared the
    MLPerf way; any other file the torchvision way (``--preprocess`` overrides)."""
    if spec.num_classes == 1001:
        return replace(spec, preprocessing="mlperf", label_offset=1)
    return spec


def onnx_weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    """A model file's initializers by name (for built-in models, torchvision's keys)."""
    graph = onnx.load(str(spec.path)).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}
