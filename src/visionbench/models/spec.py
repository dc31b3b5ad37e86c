"""What the harness and engines need to know about a model: file, input tensor, layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx
from google.protobuf.message import DecodeError

from visionbench.errors import VisionbenchError
from visionbench.fsutil import file_sha256
from visionbench.models import shapes
from visionbench.models.shapes import dims_of

Layout = Literal["NCHW", "NHWC"]
ModelFormat = Literal["onnx", "tensorflow"]
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    input_name: str
    layout: Layout
    channels: int
    height: int
    width: int
    fixed_batch: int | None
    output_name: str
    num_classes: int | None
    source: str  # "built-in", "file" or "weights"
    sha256: str
    gflop_per_image: float | None = None
    notes: tuple[str, ...] = field(default=())
    #: An ONNX file, or a TensorFlow model (Keras file, SavedModel directory, frozen graph).
    format: ModelFormat = "onnx"
    #: How images are prepared for it (``data.preprocess.PREPROCESSING``), and the offset of
    #: ImageNet class 0 in its output (1 for 1001-class models with a background class).
    preprocessing: str = "torchvision"
    label_offset: int = 0
    #: Every output, in the model's order (``output_name`` is the primary one).
    outputs: tuple[str, ...] = ()
    task: str = "classification"
    #: A transformer: quantizers get their transformer settings.
    transformer: bool = False

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.layout == "NCHW":
            return (batch, self.channels, self.height, self.width)
        return (batch, self.height, self.width, self.channels)

    def check_batch(self, batch: int) -> None:
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise VisionbenchError(
                f"model {self.path.name} has a fixed batch size of {self.fixed_batch}; "
                f"--batch-size {batch} conflicts with it (use --batch-size {self.fixed_batch} "
                "or a model with a dynamic batch dimension)"
            )


def image_layout(dims: list[int | None]) -> tuple[Layout, int, int | None, int | None] | None:
    """Layout, channels, height and width of a 4-D image input (1 or 3 channels), else None."""
    if len(dims) != 4:
        return None
    if dims[1] in (1, 3):
        return "NCHW", int(dims[1]), dims[2], dims[3]
    if dims[3] in (1, 3):
        return "NHWC", int(dims[3]), dims[1], dims[2]
    return None


def image_input(
    model_name: str, dims: list[int | None], described: str, image_like: bool = True,
    size: int = DEFAULT_IMAGE_SIZE, why: str = "",
) -> tuple[Layout, int, int, int, list[str]]:
    """Layout, channels, height, width of a model's image input (a dynamic size is measured at
    ``size``, noted with ``why``), or one clear error; ``image_like`` False when its element type
    is not float."""
    found = image_layout(dims) if image_like else None
    if found is None:
        raise VisionbenchError(
            f"model {model_name} has no image-like input (a 4-D float tensor, NCHW or NHWC "
            f"with 1 or 3 channels); its input: {described}"
            + ("" if None not in dims else "; --input-shape N,C,H,W sets its unknown dimensions")
        )
    layout, channels, h, w = found
    notes: list[str] = []
    if h is None or w is None:
        h, w = h or size, w or size
        notes.append(f"input spatial size is dynamic; benchmarked at {h}x{w}{why}")
    return layout, channels, h, w, notes


def read_onnx(path: Path, name: str | None = None, source: str = "file",
              gflop_per_image: float | None = None, input_shape: list[int] | None = None,
              task: str | None = None) -> ModelSpec:
    """Read input name, shape and layout from an ONNX file, its outputs and task (``task``: what
    the user or the registry says, checked against the outputs; else inferred from them), with
    ``input_shape`` (``--input-shape``) setting its dynamic dimensions; the GFLOPs per image
    counted from the graph where not given. Clear errors for anything else."""
    if not path.exists():
        raise VisionbenchError(f"model file not found: {path}")
    if not path.is_file():
        raise VisionbenchError(f"model path is not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as e:
        raise VisionbenchError(f"not a readable ONNX model: {path} ({type(e).__name__})") from e
    if model.ir_version <= 0 or not model.graph.node:
        raise VisionbenchError(f"not an ONNX model (no graph in the file): {path}")
    try:  # the engines' own loaders are native code: a malformed graph stops here, in words
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise VisionbenchError(f"not a valid ONNX model: {path} ({first})") from e
    if task is not None and task not in shapes.TASKS:
        raise VisionbenchError(f"unknown --task '{task}'; choose from {', '.join(shapes.TASKS)}")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    described = ", ".join(f"{i.name}{dims_of(i)}" for i in inputs) or "none"
    if len(inputs) != 1:
        raise VisionbenchError(
            f"model {path.name} has {len(inputs)} inputs ({described}); "
            "visionbench feeds one image tensor"
        )
    inp = inputs[0]
    dims, notes = shapes.apply_input_shape(path.name, inp.name, dims_of(inp), input_shape)
    image_like = inp.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)

    def at(size: int, why: str) -> tuple[Layout, int, int, int, list[str]]:
        return image_input(path.name, dims, described, image_like, size, why)

    layout, channels, h, w, size_notes = at(shapes.DEFAULT_SIZE[task or "classification"],
                                            f" (the {task} default; --input-shape sets it)"
                                            if task else " (--input-shape sets it)")
    outputs = [(o.name, dims_of(o), o.type.tensor_type.elem_type in shapes.FLOATS)
               for o in model.graph.output]
    if gflop_per_image is None or task is None or input_shape is not None:

        batch = dims[0] or 1  # a fixed batch is inferred as it is, counted per image

        def shape_at() -> list[int]:
            return [batch, *([channels, h, w] if layout == "NCHW" else [h, w, channels])]

        inferred = shapes.infer(model, shape_at(), path.name)
        outputs = shapes.output_dims(inferred)
        if task is None:
            task = shapes.infer_task(outputs)
            if size_notes and shapes.DEFAULT_SIZE[task] != h:  # measured at the task's size
                layout, channels, h, w, size_notes = at(
                    shapes.DEFAULT_SIZE[task], f" (the {task} default; --input-shape sets it)")
                inferred = shapes.infer(model, shape_at(), path.name)
                outputs = shapes.output_dims(inferred)
        else:
            shapes.check_task(task, path.name, outputs)
        if gflop_per_image is None:
            from visionbench.models.flops import count_macs

            macs = count_macs(inferred)
            gflop_per_image = None if macs is None else 2 * macs / batch / 1e9
    # The logits (or probabilities): the first float 2-D output. MLPerf's resnet50_v1.onnx lists
    # its ArgMax (int64) before its softmax. Other tasks: the first output.
    primary = next((o for o in outputs if task == "classification" and o[2] and len(o[1]) == 2),
                   outputs[0])
    return ModelSpec(
        name=name or path.stem,
        path=path.resolve(),
        input_name=inp.name,
        layout=layout,
        channels=int(channels),
        height=int(h),
        width=int(w),
        fixed_batch=dims[0],
        output_name=primary[0],
        num_classes=primary[1][-1] if task == "classification" and primary[1] else None,
        source=source,
        sha256=file_sha256(path),
        gflop_per_image=gflop_per_image,
        notes=tuple(notes + size_notes),
        outputs=tuple(o[0] for o in outputs),
        task=task or "classification",
    )
