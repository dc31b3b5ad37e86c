"""Multiply-accumulates of one image through an ONNX graph, counted from its shapes: convolutions
and matrix products (Conv, ConvTranspose, Gemm, MatMul), which are nearly all of a vision
network's arithmetic; element-wise operations, pooling and normalisation are left out, as the
published figures of these networks leave them out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import onnx

from visionbench.models.shapes import dims_of


def count_macs(inferred: onnx.ModelProto) -> int | None:
    """MACs of one run of a model whose shapes are inferred (``shapes.infer``), or
    None where a product's shapes are not all known."""
    shapes: dict[str, list[int] | None] = {
        vi.name: [d if d else 0 for d in dims_of(vi)]
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({i.name: list(i.dims) for i in inferred.graph.initializer})
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        ins = [shapes.get(n) for n in node.input[:2]]
        if not out or any(not s or 0 in s for s in [out, *ins]):
            return None
        a, b = ins
        if node.op_type == "Conv":  # each output element: in/groups x kernel products
            total += math.prod(out) * math.prod(b[1:])
        elif node.op_type == "ConvTranspose":  # each input element reaches out/groups x kernel
            total += math.prod(a) * math.prod(b[1:])
        elif node.op_type == "Gemm":
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            total += math.prod(out) * (a[0] if trans_a else a[-1])
        else:
            total += math.prod(out) * a[-1]
    return total


#: The operation types that are convolutions or matrix products, in every engine's words
#: (ONNX Runtime's Conv, FusedConv, QLinearConv, Gemm; OpenVINO's Convolution, FullyConnected;
#: PyTorch's aten::conv2d, mkldnn::_convolution_pointwise, onednn::qlinear_pointwise, aten::addmm;
#: TensorFlow's FusedConv2D, QuantizedConv2DWith..., MatMul), not QLinearAdd and its kind.
_COMPUTE = re.compile(r"conv|matmul|gemm|fullyconnected|inner_product|addmm|aten::(b?mm|linear)\b"
                      r"|qlinear_pointwise", re.IGNORECASE)


def is_compute(op_type: str) -> bool:
    """Whether an executed operation is a convolution or a matrix product."""
    return bool(_COMPUTE.search(op_type))


def op_flops(op_type: str, inputs: Sequence[Sequence[int]],
             output: Sequence[int]) -> float | None:
    """Arithmetic operations (a multiply and an add count two) of one executed convolution or
    matrix product, from the shapes the engine ran it with; None for other operations or shapes
    it cannot read. A convolution's output elements each take (input channels / groups x kernel)
    products: its weight's elements over the output channels, which also holds for a blocked
    layout (ONNX Runtime's NCHWc: ``[N, C/8, H, W, 8]``)."""
    if not is_compute(op_type) or not output or not inputs or not inputs[0]:
        return None
    out = math.prod(output)
    if "conv" in op_type.lower():
        weight = next((s for s in inputs[1:] if len(s) >= 3), None)
        if weight is None or len(output) < 3:
            return None
        channels = output[1] * (output[4] if len(output) == 5 else 1)
        return 2.0 * out * math.prod(weight) / channels if channels else None
    return 2.0 * out * inputs[0][-1]  # a matrix product: each output element takes K products


#: The groups an executed operation falls in, across engines (the first that matches; layout
#: conversions a group of their own, as ``benchmark_app -pc`` users look for them), for sums and
#: the report's figure; what matches none is "other operations".
GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("convolutions and matrix products", _COMPUTE),
    ("layout conversions", re.compile(r"reorder|transpose|contiguous|copy|aten::to$|reshape|"
                                      r"flatten|^pad$|concat|nchwc", re.IGNORECASE)),
    ("quantize and dequantize", re.compile(r"quantize", re.IGNORECASE)),
    ("pooling", re.compile(r"pool|reducemean|^mean$", re.IGNORECASE)),
    ("normalisation", re.compile(r"norm", re.IGNORECASE)),
)
OTHER = "other operations"


def op_group(op_type: str) -> str:
    """The group of an executed operation type (``GROUPS``), else ``OTHER``."""
    return next((name for name, pattern in GROUPS if pattern.search(op_type)), OTHER)
