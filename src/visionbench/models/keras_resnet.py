"""ResNet-50 v1.5 as a Keras model (NHWC, the TensorFlow layout) built from a torchvision-keyed
state_dict, so TensorFlow runs exactly the weights every other engine runs.

Keras' own ``keras.applications.ResNet50`` is v1 (stride on the 1x1 convolution), not the v1.5 of
the reference study. Padding is explicit (ZeroPadding2D, then a 'valid' convolution): TensorFlow's
'same' padding pads a stride-2 convolution on the bottom/right only, unlike PyTorch and ONNX.

Requires TensorFlow (the ``[tensorflow]`` extra); nothing here imports it at package import time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionbench.models.resnet50 import BN_EPS, Conv, ResNetConfig, layout
from visionbench.models.tensorflow_files import import_tensorflow


def layer_name(key: str) -> str:
    return key.replace(".", "_")


def _conv_bn(keras: Any, x: Any, c: Conv, sd: dict[str, np.ndarray], relu: bool) -> Any:
    w = sd[f"{c.key}.weight"]  # torch: [out, in, kh, kw]
    if c.pad:
        x = keras.layers.ZeroPadding2D(c.pad, name=layer_name(c.key) + "_pad")(x)
    conv = keras.layers.Conv2D(w.shape[0], w.shape[2:], strides=c.stride, padding="valid",
                               use_bias=False, name=layer_name(c.key))
    x = conv(x)
    conv.set_weights([w.transpose(2, 3, 1, 0)])
    bn = keras.layers.BatchNormalization(epsilon=BN_EPS, name=layer_name(c.bn))
    x = bn(x)
    bn.set_weights([sd[f"{c.bn}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
    return keras.layers.ReLU(name=layer_name(c.bn) + "_relu")(x) if relu else x


def make_keras(sd: dict[str, np.ndarray], cfg: ResNetConfig, name: str = "resnet50_v1_5") -> Any:
    """The Keras model; input ``input`` [N, H, W, 3] float32, output ``logits`` [N, classes]."""
    keras = import_tensorflow().keras
    stem, blocks = layout(cfg)
    inp = keras.Input((cfg.image_size, cfg.image_size, 3), name="input", dtype="float32")
    x = _conv_bn(keras, inp, stem, sd, relu=True)
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # after ReLU: zeros never win the max
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for b in blocks:
        shortcut = x if b.downsample is None else _conv_bn(keras, x, b.downsample, sd, relu=False)
        h = _conv_bn(keras, x, b.convs[0], sd, relu=True)
        h = _conv_bn(keras, h, b.convs[1], sd, relu=True)
        h = _conv_bn(keras, h, b.convs[2], sd, relu=False)
        x = keras.layers.Add(name=layer_name(b.prefix) + "_add")([h, shortcut])
        x = keras.layers.ReLU(name=layer_name(b.prefix) + "_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    fc = keras.layers.Dense(sd["fc.weight"].shape[0], name="logits")
    out = fc(x)
    fc.set_weights([sd["fc.weight"].T, sd["fc.bias"]])
    return keras.Model(inp, out, name=name)
