"""An ONNX model's input shape as the user sets it (``--input-shape``, as benchmark_app's ``-shape``),
its outputs' shapes at that input (ONNX shape inference: a shape the model refuses is one clear
line), and its task, inferred from those outputs or checked against ``--task``."""

from __future__ import annotations

import onnx
from onnx import shape_inference

from visionbench.errors import VisionbenchError
from visionbench.settings import TASKS

#: The spatial size a dynamic input is measured at, by task, unless ``--input-shape`` sets it.
DEFAULT_SIZE = {"classification": 224, "detection": 640, "segmentation": 512, "other": 224}
#: What each task needs of a model's outputs, as the refusal of a contradicting ``--task`` says.
NEEDS = {
    "classification": "a 2-D float output of class scores [N, classes]",
    "detection": "a box output ([N, boxes, 4], or several outputs of 3 or more dimensions)",
    "segmentation": "a 4-D float output of class maps [N, classes, H, W]",
    "other": "",
}
FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)

Dims = list[int | None]


def dims_of(vi: onnx.ValueInfoProto) -> Dims:
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def parse_shape(text: str | list[int] | tuple[int, ...]) -> list[int]:
    """``--input-shape`` as a list of positive integers ("1,3,640,640", "[1,3,640,640]")."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [p.strip() for p in str(text).strip().strip("[]()").split(",")]
    try:
        dims = [int(p) for p in items]
    except (TypeError, ValueError):
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise VisionbenchError(f"--input-shape must be positive integers like 1,3,640,640; got {text}")
    return dims


def apply_input_shape(model_name: str, input_name: str, dims: Dims,
                      given: list[int] | None) -> tuple[Dims, list[str]]:
    """The input's dimensions with ``--input-shape`` filling the dynamic ones; a dimension the
    file fixes must agree. The batch (the first) stays dynamic where it is: ``--batch-size``
    sets it."""
    if given is None:
        return dims, []
    if len(given) != len(dims):
        raise VisionbenchError(
            f"--input-shape has {len(given)} dimensions; input '{input_name}' of {model_name} has "
            f"{len(dims)} ({_show(dims)})")
    notes = []
    out: Dims = []
    for i, (have, want) in enumerate(zip(dims, given, strict=True)):
        if have is not None and have != want:
            raise VisionbenchError(
                f"--input-shape {','.join(map(str, given))} conflicts with input '{input_name}' of "
                f"{model_name}, whose dimension {i} is fixed at {have} ({_show(dims)})")
        if i == 0 and have is None:
            if want != 1:
                notes.append(f"the batch of --input-shape ({want}) is not used: the model's batch "
                             "is dynamic and follows --batch-size")
            out.append(None)
        else:
            out.append(want)
    return out, notes


def _show(dims: Dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def infer(model: onnx.ModelProto, shape: list[int], name: str = "the model") -> onnx.ModelProto:
    """``model`` with every tensor's shape inferred for one input of ``shape``; a model that
    refuses the shape (inference finds a contradiction) is one clear error."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    for d, v in zip(inp.type.tensor_type.shape.dim, shape, strict=False):
        d.Clear()
        d.dim_value = v
    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises several types for the same refusal
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:240]
        raise VisionbenchError(
            f"{name} refuses input shape {_show(list(shape))}: {first}"
        ) from None


def output_dims(inferred: onnx.ModelProto) -> list[tuple[str, Dims, bool]]:
    """Each output's name, dimensions and whether it is a float tensor."""
    return [(o.name, dims_of(o), o.type.tensor_type.elem_type in FLOATS)
            for o in inferred.graph.output]


def _has(task: str, outputs: list[tuple[str, Dims, bool]]) -> bool:
    if task == "classification":
        return any(f and len(d) == 2 for _, d, f in outputs)
    if task == "segmentation":
        return any(f and len(d) == 4 and (d[2] or 0) > 1 and (d[3] or 0) > 1 for _, d, f in outputs)
    if task == "detection":
        boxes = any(len(d) == 3 and d[-1] == 4 for _, d, _ in outputs)
        return boxes or sum(1 for _, d, _ in outputs if len(d) >= 3) >= 2
    return True


def infer_task(outputs: list[tuple[str, Dims, bool]]) -> str:
    """What the outputs say the model does, where they make it clear, else ``other``."""
    if _has("detection", outputs) and not any(len(d) == 4 for _, d, _ in outputs):
        return "detection"
    if _has("segmentation", outputs) and all(len(d) == 4 for _, d, f in outputs if f):
        return "segmentation"
    if _has("classification", outputs) and all(len(d) <= 2 for _, d, _ in outputs):
        return "classification"
    return "other"


def check_task(task: str, model_name: str, outputs: list[tuple[str, Dims, bool]]) -> None:
    """``--task`` against what the outputs are: a contradiction is one clear error."""
    if task not in TASKS:
        raise VisionbenchError(f"unknown --task '{task}'; choose from {', '.join(TASKS)}")
    if not _has(task, outputs):
        shown = ", ".join(f"{n}{_show(d)}" for n, d, _ in outputs)
        raise VisionbenchError(f"--task {task} contradicts the outputs of {model_name} ({shown}): "
                               f"{task} needs {NEEDS[task]}")
