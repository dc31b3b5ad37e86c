"""Turn a ResNet-50 v1.5 state_dict (numpy arrays, torchvision keys) into an ONNX graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from visionbench.models.resnet50 import BN_EPS, Conv, ResNetConfig, layout

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def build_onnx(sd: dict[str, np.ndarray], cfg: ResNetConfig, doc: str = "") -> onnx.ModelProto:
    """An NCHW float32 graph with a dynamic batch dimension named ``N``."""
    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in sd.items()]
    counter = iter(range(10**6))

    def name(stem: str) -> str:
        return f"{stem}_{next(counter)}"

    def conv_bn(x: str, c: Conv) -> str:
        w = sd[f"{c.key}.weight"]
        k = w.shape[2]
        y = name(c.key)
        nodes.append(
            helper.make_node(
                "Conv", [x, f"{c.key}.weight"], [y], name=c.key,
                kernel_shape=[k, k], strides=[c.stride, c.stride], pads=[c.pad] * 4,
            )
        )
        z = name(c.bn)
        ins = [y] + [f"{c.bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var")]
        nodes.append(helper.make_node("BatchNormalization", ins, [z], name=c.bn, epsilon=BN_EPS))
        return z

    def relu(x: str) -> str:
        y = name("relu")
        nodes.append(helper.make_node("Relu", [x], [y], name=y))
        return y

    stem, blocks = layout(cfg)
    h = relu(conv_bn(INPUT_NAME, stem))
    pooled = name("maxpool")
    nodes.append(
        helper.make_node(
            "MaxPool", [h], [pooled], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
    )
    h = pooled
    for b in blocks:
        c1, c2, c3 = b.convs
        y = conv_bn(relu(conv_bn(relu(conv_bn(h, c1)), c2)), c3)
        idn = conv_bn(h, b.downsample) if b.downsample is not None else h
        s = name(f"{b.prefix}.add")
        nodes.append(helper.make_node("Add", [y, idn], [s], name=s))
        h = relu(s)
    gap, flat = name("avgpool"), name("flatten")
    nodes.append(helper.make_node("GlobalAveragePool", [h], [gap], name="avgpool"))
    nodes.append(helper.make_node("Flatten", [gap], [flat], name="flatten", axis=1))
    nodes.append(
        helper.make_node(
            "Gemm", [flat, "fc.weight", "fc.bias"], [OUTPUT_NAME], name="fc", transB=1
        )
    )
    size = cfg.image_size
    graph = helper.make_graph(
        nodes,
        "resnet50_v1_5",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", cfg.num_classes])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="visionbench"
    )
    model.ir_version = 8
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model
