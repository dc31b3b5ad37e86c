"""What the harness and engines need to know about a model: file, input tensor, layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx
from google.protobuf.message import DecodeError

from visionbench.errors import VisionbenchError
from visionbench.fsutil import file_sha256

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
) -> tuple[Layout, int, int, int, list[str]]:
    """Layout, channels, height, width of a model's image input (a dynamic size is measured at
    224x224, noted), or one clear error; ``image_like`` False when its element type is not float."""
    found = image_layout(dims) if image_like else None
    if found is None:
        raise VisionbenchError(
            f"model {model_name} has no image-like input (a 4-D float tensor, NCHW or NHWC "
            f"with 1 or 3 channels); its input: {described}"
        )
    layout, channels, h, w = found
    notes: list[str] = []
    if h is None or w is None:
        h, w = h or DEFAULT_IMAGE_SIZE, w or DEFAULT_IMAGE_SIZE
        notes.append(f"input spatial size is dynamic; benchmarked at {h}x{w}")
    return layout, channels, h, w, notes


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def read_onnx(path: Path, name: str | None = None, source: str = "file",
              gflop_per_image: float | None = None) -> ModelSpec:
    """Read input name, shape and layout from an ONNX file; clear errors for anything else."""
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
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    described = ", ".join(f"{i.name}{_dims(i)}" for i in inputs) or "none"
    if len(inputs) != 1:
        raise VisionbenchError(
            f"model {path.name} has {len(inputs)} inputs ({described}); "
            "visionbench feeds one image tensor"
        )
    inp = inputs[0]
    dims = _dims(inp)
    elem = inp.type.tensor_type.elem_type
    layout, channels, h, w, notes = image_input(
        path.name, dims, described, elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    # The logits (or probabilities): the first float rank-2 output. MLPerf's resnet50_v1.onnx lists
    # its ArgMax (int64) before its softmax.
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    out = next((o for o in model.graph.output if o.type.tensor_type.elem_type in float_types
                and len(_dims(o)) == 2), model.graph.output[0])
    out_dims = _dims(out)
    return ModelSpec(
        name=name or path.stem,
        path=path.resolve(),
        input_name=inp.name,
        layout=layout,
        channels=int(channels),
        height=int(h),
        width=int(w),
        fixed_batch=dims[0],
        output_name=out.name,
        num_classes=out_dims[-1] if out_dims else None,
        source=source,
        sha256=file_sha256(path),
        gflop_per_image=gflop_per_image,
        notes=tuple(notes),
    )
