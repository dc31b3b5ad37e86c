"""ResNet-50 v1.5 rebuilt in PyTorch or Keras from the weights of an ONNX file: the built-in ResNets,
a user's checkpoint (exported to ONNX first) and any ONNX file whose weights fit the topology
exactly. The torch and tensorflow engines then run the very weights the ONNX engines run."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from visionbench.errors import VisionbenchError
from visionbench.models.resnet50 import ResNetConfig, config_from_weights
from visionbench.models.spec import ModelSpec


def onnx_weights(spec: ModelSpec) -> dict[str, np.ndarray]:
    """A model file's initializers by name (for built-in models, torchvision's keys)."""
    graph = onnx.load(str(spec.path)).graph
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def resnet_weights(spec: ModelSpec, framework: str) -> tuple[ResNetConfig, dict[str, np.ndarray]]:
    """The ResNet v1.5 shape and weights of ``spec``, or one clear error."""
    arrays = onnx_weights(spec) if spec.layout == "NCHW" and spec.format == "onnx" else {}
    cfg = config_from_weights(arrays, spec.height) if arrays else None
    if cfg is None:
        raise VisionbenchError(
            f"visionbench has no {framework} definition of {spec.path.name}: it rebuilds the "
            "registered models and ResNet-50 v1.5 weights (torchvision keys) only")
    return cfg, arrays


def torch_module(spec: ModelSpec) -> tuple[Any, str]:
    from visionbench.models.torch_resnet import module_from_arrays

    cfg, arrays = resnet_weights(spec, "PyTorch")
    return module_from_arrays(cfg, arrays)


def keras_model(spec: ModelSpec) -> Any:
    from visionbench.models.keras_resnet import make_keras

    cfg, arrays = resnet_weights(spec, "Keras")
    return make_keras(arrays, cfg)
