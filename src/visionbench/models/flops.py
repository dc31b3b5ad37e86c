"""Multiply-accumulates of one image through an ONNX graph, counted from its shapes: convolutions
and matrix products (Conv, ConvTranspose, Gemm, MatMul), which are nearly all of a vision
network's arithmetic; element-wise operations, pooling and normalisation are left out, as the
published figures of these networks leave them out."""

from __future__ import annotations

import math

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
