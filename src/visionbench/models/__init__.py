"""Models: the registry's built-in models by name (``registry``, ``zoo/``), or any image-classification
ONNX file or TensorFlow model by path, or ResNet-50 weights (a torchvision checkpoint); and each
model's definition in PyTorch or Keras for the engines that rebuild it in their own framework."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from visionbench.cache import cached
from visionbench.errors import VisionbenchError
from visionbench.fsutil import atomic_write_bytes, cache_dir
from visionbench.models import registry, resnet_weights
from visionbench.models.onnx_graph import build_onnx
from visionbench.models.registry import Definition
from visionbench.models.resnet50 import RESNET50, macs
from visionbench.models.resnet_weights import onnx_weights
from visionbench.models.spec import ModelSpec, read_onnx

__all__ = ["DEFAULT_MODEL", "ModelSpec", "build_builtin", "definition_missing", "from_checkpoint",
           "keras_model", "onnx_weights", "resolve", "torch_module"]
DEFAULT_MODEL = "resnet50"
DEFAULT_SEED = 0
#: Bump when the checkpoint exporter's output changes, so stale cached files are not reused.
BUILDER_REVISION = 1
#: What each definition is called in messages.
FRAMEWORK = {"torch": "PyTorch", "keras": "Keras"}


def build_builtin(name: str, seed: int = DEFAULT_SEED) -> Path:
    """A registered model's ONNX file, built once and cached."""
    return registry.get(name).onnx_path(seed)


def from_checkpoint(weights: Path) -> Path:
    """The ONNX file of ResNet-50 v1.5 carrying a user's torchvision checkpoint, built once."""
    from visionbench.fsutil import file_sha256

    if not weights.is_file():
        raise VisionbenchError(f"weights file not found: {weights}")
    digest = file_sha256(weights)[:16]
    path = cache_dir() / "models" / f"resnet50-v1.5-weights-{digest}-r{BUILDER_REVISION}.onnx"

    def write(path: Path) -> None:
        try:
            from visionbench.models.torch_resnet import load_checkpoint, numpy_state_dict
        except ImportError as e:
            raise VisionbenchError(
                "--weights needs PyTorch to read the checkpoint: pip install 'visionbench[torch]'"
            ) from e
        sd = numpy_state_dict(load_checkpoint(weights))
        doc = f"visionbench resnet50: ResNet-50 v1.5 with the weights of {weights.name}"
        atomic_write_bytes(path, build_onnx(sd, RESNET50, doc).SerializeToString())

    return cached(path, f"ResNet-50 model with the weights of {weights.name}", write)


def resolve(
    model: str | None = None, seed: int = DEFAULT_SEED, weights: Path | None = None,
    input_name: str | None = None, output_name: str | None = None, threads: int | None = None,
    input_shape: list[int] | None = None, task: str | None = None,
) -> ModelSpec:
    """A registered name (built on first use), a path to the user's ONNX or TensorFlow model, or
    ResNet-50 weights: a torchvision checkpoint (run by every engine) or TensorFlow's own file.
    ``input_name``/``output_name`` pick tensors of a TensorFlow model; ``threads`` are the run's
    (TensorFlow fixes its thread pools when it first reads a model). ``input_shape`` sets an ONNX
    file's dynamic input dimensions, ``task`` says what it does (else inferred from its outputs)."""
    try:
        return _resolve(model, seed, weights, input_name, output_name, threads, input_shape, task)
    except OSError as e:  # a name too long, a folder not readable: before any file is opened
        raise VisionbenchError(f"cannot read the model {weights or model}: {e.strerror}") from e


def _resolve(model: str | None, seed: int, weights: Path | None, input_name: str | None,
             output_name: str | None, threads: int | None, input_shape: list[int] | None,
             task: str | None) -> ModelSpec:
    from visionbench.models.tensorflow_files import is_tensorflow_path, read_tensorflow

    entry = registry.find(model) if model is not None and weights is None else None
    tf_file = (weights is not None and is_tensorflow_path(weights)) or (
        weights is None and entry is None and model is not None and is_tensorflow_path(Path(model)))
    if (input_name or output_name) and not tf_file:
        raise VisionbenchError("--input-name and --output-name pick tensors of a TensorFlow model file")
    if (input_shape or task) and (tf_file or weights is not None):
        raise VisionbenchError("--input-shape and --task are for ONNX model files and built-in models")
    if weights is not None:
        if model not in (None, DEFAULT_MODEL):
            raise VisionbenchError("--weights is a ResNet-50 checkpoint: use it without --model")
        if tf_file:
            return with_label_convention(read_tensorflow(
                weights, input_name, output_name, resnet50=True, source="weights", threads=threads))
        gflop = 2 * macs(RESNET50) / 1e9
        return read_onnx(from_checkpoint(weights), f"resnet50 ({weights.name})", "weights", gflop)
    if model is None:
        entry = registry.get(DEFAULT_MODEL)
    if entry is not None:
        card = entry.card
        if task is not None and task != card.task:
            raise VisionbenchError(f"--task {task} contradicts {card.name}, a {card.task} model")
        spec = read_onnx(entry.onnx_path(seed), card.name, "built-in", card.gflop_per_image,
                         input_shape, card.task)
        return replace(spec, preprocessing=card.preprocessing, label_offset=card.label_offset,
                       transformer=card.transformer, num_classes=card.num_classes)
    if tf_file:
        return with_label_convention(read_tensorflow(Path(model), input_name, output_name,
                                                     threads=threads))
    return with_label_convention(read_onnx(Path(model), input_shape=input_shape, task=task))


def with_label_convention(spec: ModelSpec) -> ModelSpec:
    """A 1001-class model is a TensorFlow-slim/MLPerf ResNet (class 0 = background), prepared the
    MLPerf way; any other file the torchvision way (``--preprocess`` overrides)."""
    if spec.num_classes == 1001:
        return replace(spec, preprocessing="mlperf", label_offset=1)
    return spec


def _registered(spec: ModelSpec) -> registry.Entry | None:
    return registry.find(spec.name) if spec.source == "built-in" else None


def definition_missing(spec: ModelSpec, definition: Definition) -> str | None:
    """Why ``spec`` cannot be rebuilt as ``definition`` (a registered model without one), or None.
    A user's ONNX file is judged when it is rebuilt (its weights must fit ResNet-50 v1.5)."""
    entry = _registered(spec)
    if entry is None or entry.has(definition):
        return None
    return f"{spec.name} has no {FRAMEWORK[definition]} definition in visionbench (ONNX only)"


def _rebuild(spec: ModelSpec, definition: Definition) -> Any:
    """The registered model's own definition, else ResNet-50 v1.5 from the file's weights."""
    entry = _registered(spec)
    card = entry.card if entry is not None else None
    build = {"torch": card.torch_module, "keras": card.keras_model}[definition] if card else None
    if build is not None:
        return build(spec)
    if why := definition_missing(spec, definition):
        raise VisionbenchError(why)
    return {"torch": resnet_weights.torch_module, "keras": resnet_weights.keras_model}[definition](spec)


def torch_module(spec: ModelSpec) -> tuple[Any, str]:
    """The model as a torch module in eval mode, and what it is."""
    return _rebuild(spec, "torch")


def keras_model(spec: ModelSpec) -> Any:
    """The model as a Keras model taking NHWC input."""
    return _rebuild(spec, "keras")
