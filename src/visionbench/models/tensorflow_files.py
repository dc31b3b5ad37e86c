"""TensorFlow's own model files: a Keras file (.keras, .h5), a SavedModel directory, or a frozen
graph (.pb, as Intel's reference models and MLPerf ship ResNet-50). Each is read into one frozen
function (variables folded into constants, as the reference scripts run it) from one image input
to one logits output, and described by a ModelSpec.

Requires TensorFlow (the ``[tensorflow]`` extra); nothing here imports it at package import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from visionbench.errors import VisionbenchError, describe
from visionbench.fsutil import file_sha256
from visionbench.models.spec import ModelSpec, image_input

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
GRAPH_SUFFIXES = (".pb",)
#: Convolutions of ResNet-50 (v1 and v1.5 alike): 1 stem + 16 blocks x 3 + 4 projections.
RESNET50_CONVS = 53


def is_tensorflow_path(path: Path) -> bool:
    return path.suffix.lower() in KERAS_SUFFIXES + GRAPH_SUFFIXES or path.is_dir()


@lru_cache(maxsize=1)
def import_tensorflow() -> Any:
    """TensorFlow with oneDNN on (the reference setting; TensorFlow leaves it off by default on
    some CPUs) and its start-up chatter (CUDA probing, absl notices) kept off the terminal."""
    from visionbench.capture import capture_fd

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with capture_fd(2):
            import tensorflow as tf

            tf.config.list_physical_devices()  # probes for GPUs once, here, quietly
    except ImportError as e:
        raise VisionbenchError(
            "TensorFlow models need TensorFlow: pip install 'visionbench[tensorflow]'"
        ) from e
    from visionbench.sysinfo import available_cpus

    # The reference setting from the start, so that whatever first runs TensorFlow in this process
    # (reading a model, building one) does not fix its pools at TensorFlow's own defaults; a run
    # with --threads sets its count before TensorFlow's runtime starts.
    set_threads(tf, available_cpus())
    return tf


def set_threads(tf: Any, threads: int) -> tuple[int, int]:
    """The reference setting: intra-op threads = ``threads``, inter-op = 1. TensorFlow fixes both
    once its runtime starts, so whatever reads a model first must set them."""
    want = (threads, 1)
    have = (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())
    if have != want:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError as e:
            raise VisionbenchError(
                f"TensorFlow's thread pools are already running with {have[0] or 'default'} intra-op and "
                f"{have[1] or 'default'} inter-op threads in this process and cannot change to "
                f"{threads}: run each thread count in its own visionbench run"
            ) from e
    return want


@dataclass(frozen=True)
class FrozenModel:
    """A frozen concrete function: one float image tensor in, one logits tensor out."""

    fn: Any
    input_name: str
    output_name: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]

    @property
    def graph_def(self) -> Any:
        return self.fn.graph.as_graph_def()


def freeze(tf: Any, call: Any, shape: tuple[int | None, ...], input_name: str, output_name: str,
           dtype: Any = None) -> FrozenModel:
    """Trace ``call`` on one input and fold its variables into constants."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec(shape, dtype or tf.float32, name="input")
    try:  # a graph that imports may still not trace on one input (fuzzing found several)
        concrete = tf.function(call).get_concrete_function(spec)
        frozen = convert_variables_to_constants_v2(concrete)
        out = frozen.outputs[0]
    except Exception as e:
        raise VisionbenchError(f"cannot run the model from {input_name} to {output_name} on "
                               f"one {list(shape)} input: {describe(e)}") from e
    return FrozenModel(frozen, input_name, output_name, tuple(shape), tuple(out.shape.as_list()))


def _pick(names: list[str], wanted: str | None, what: str, path: Path, flag: str) -> str:
    if wanted is not None:
        if wanted not in names:
            raise VisionbenchError(f"{path.name} has no {what} '{wanted}'; it has: {', '.join(names)}")
        return wanted
    if len(names) != 1:
        raise VisionbenchError(
            f"{path.name} has {len(names)} {what}s ({', '.join(names)}); name one with {flag}"
        )
    return names[0]


def _keras(tf: Any, path: Path, input_name: str | None, output_name: str | None) -> FrozenModel:
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for a file it cannot read
        raise VisionbenchError(f"not a readable Keras model: {path} ({describe(e)})") from e
    ins = [t.name.split(":")[0] for t in model.inputs]
    outs = list(model.output_names) if hasattr(model, "output_names") else [
        t.name.split(":")[0] for t in model.outputs]
    iname = _pick(ins, input_name, "input", path, "--input-name")
    oname = _pick(outs, output_name, "output", path, "--output-name")
    i, o = ins.index(iname), outs.index(oname)
    shape = tuple(model.inputs[i].shape)

    def call(x: Any) -> Any:
        args = x if len(ins) == 1 else {iname: x}
        y = model(args, training=False)
        return y if len(outs) == 1 else (y[oname] if isinstance(y, dict) else y[o])

    return freeze(tf, call, shape, iname, oname, model.inputs[i].dtype)


def _saved_model(tf: Any, path: Path, input_name: str | None, output_name: str | None) -> FrozenModel:
    if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
        raise VisionbenchError(f"{path} is a directory but not a TensorFlow SavedModel (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise VisionbenchError(f"cannot load the SavedModel {path}: {describe(e)}") from e
    sigs = dict(loaded.signatures)
    if "serving_default" not in sigs:
        have = ", ".join(sigs) or "none"
        raise VisionbenchError(
            f"SavedModel {path} has no serving signature ('serving_default'); its signatures: {have}"
        )
    sig = sigs["serving_default"]
    inputs = sig.structured_input_signature[1]
    outputs = sig.structured_outputs
    iname = _pick(list(inputs), input_name, "input", path, "--input-name")
    oname = _pick(list(outputs), output_name, "output", path, "--output-name")
    spec = inputs[iname]
    return freeze(tf, lambda x: sig(**{iname: x})[oname], tuple(spec.shape), iname, oname, spec.dtype)


def _frozen_graph(tf: Any, path: Path, input_name: str | None, output_name: str | None) -> FrozenModel:
    from google.protobuf.message import DecodeError

    gd = tf.compat.v1.GraphDef()
    try:
        gd.ParseFromString(path.read_bytes())
    except (DecodeError, OSError, RuntimeWarning) as e:
        raise VisionbenchError(f"not a frozen TensorFlow graph: {path} ({describe(e)})") from e
    if not gd.node:
        raise VisionbenchError(f"not a frozen TensorFlow graph (no nodes): {path}")
    try:
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])
    except Exception as e:
        raise VisionbenchError(f"cannot import the graph {path}: {describe(e)}") from e
    graph = wrapped.graph
    ops = graph.get_operations()
    placeholders = [op.name for op in ops if op.type == "Placeholder"]
    iname = _pick(placeholders, _op(input_name), "input placeholder", path, "--input-name")
    consumed = {t.op.name for op in ops for t in op.inputs}
    candidates = [op.name for op in ops if op.name not in consumed and op.outputs
                  and op.outputs[0].dtype.is_floating and op.outputs[0].shape.rank == 2]
    if output_name is not None:
        if _op(output_name) not in {op.name for op in ops}:
            raise VisionbenchError(f"{path.name} has no tensor '{output_name}'")
        oname = _op(output_name)
    else:
        oname = _pick(candidates, None, "logits-like output", path, "--output-name")
    try:
        pruned = wrapped.prune(f"{iname}:0", f"{oname}:0")
    except Exception as e:
        raise VisionbenchError(
            f"{path.name}: cannot cut the graph from {iname} to {oname}: {describe(e)}"
        ) from e
    placeholder = graph.get_tensor_by_name(f"{iname}:0")
    shape = tuple(placeholder.shape.as_list()) if placeholder.shape.rank is not None else (None,) * 4
    return freeze(tf, pruned, shape, iname, oname, placeholder.dtype)


def _op(name: str | None) -> str | None:
    return None if name is None else name.split(":")[0]


@lru_cache(maxsize=4)
def load_frozen(path: Path, input_name: str | None = None, output_name: str | None = None) -> FrozenModel:
    """Any of TensorFlow's model files as one frozen function (cached per process)."""
    if not path.exists():
        raise VisionbenchError(f"model file not found: {path}")
    tf = import_tensorflow()
    suffix = path.suffix.lower()
    if path.is_dir():
        return _saved_model(tf, path, input_name, output_name)
    if suffix in KERAS_SUFFIXES:
        return _keras(tf, path, input_name, output_name)
    if suffix in GRAPH_SUFFIXES:
        return _frozen_graph(tf, path, input_name, output_name)
    raise VisionbenchError(
        f"not a TensorFlow model file: {path} (.keras, .h5, .pb or a SavedModel directory)"
    )


def conv_structure(graph_def: Any) -> tuple[int, int]:
    """Convolutions in a frozen graph, and how many of them are 3x3 with stride 2: ResNet-50 v1.5
    puts the stride of each downsampling block on its 3x3 convolution (3 of them), v1 on the 1x1."""
    nodes = {n.name: n for n in graph_def.node}
    convs = 0
    strided_3x3 = 0
    for n in graph_def.node:
        if n.op != "Conv2D":
            continue
        convs += 1
        strides = list(n.attr["strides"].list.i)
        filt = nodes.get(n.input[1].split(":")[0])
        while filt is not None and filt.op == "Identity":  # frozen variables read through Identity
            filt = nodes.get(filt.input[0].split(":")[0])
        dims = [d.size for d in filt.attr["value"].tensor.tensor_shape.dim] if filt else []
        if dims[:2] == [3, 3] and strides[1:3] == [2, 2]:
            strided_3x3 += 1
    return convs, strided_3x3


def read_tensorflow(path: Path, input_name: str | None = None, output_name: str | None = None,
                    resnet50: bool = False, source: str = "file", threads: int | None = None) -> ModelSpec:
    """Describe a TensorFlow model file; ``resnet50`` demands ResNet-50 (``--weights``).
    ``threads``: the run's, set before TensorFlow starts (default: every available CPU)."""
    from visionbench.models.resnet50 import RESNET50, macs
    from visionbench.sysinfo import available_cpus

    if path.exists():
        set_threads(import_tensorflow(), threads or available_cpus())
    frozen = load_frozen(path.resolve(), input_name, output_name)
    dims = list(frozen.input_shape)
    described = f"{frozen.input_name}{dims}"
    layout, channels, h, w, notes = image_input(path.name, dims, described)
    convs, strided = conv_structure(frozen.graph_def)
    gflop = None
    if convs == RESNET50_CONVS and h == w == 224:
        gflop = 2 * macs(RESNET50) / 1e9
        if strided == 0:
            notes.append("ResNet-50 v1 (stride on the 1x1 convolutions), not the v1.5 of the reference study")
    if resnet50 and convs != RESNET50_CONVS:
        raise VisionbenchError(
            f"{path.name} is not ResNet-50: it has {convs} convolutions, ResNet-50 has {RESNET50_CONVS} "
            "(to benchmark another model, pass it with --model)"
        )
    return ModelSpec(
        name=path.stem or path.name, path=path.resolve(), input_name=frozen.input_name, layout=layout,
        channels=int(channels), height=int(h), width=int(w), fixed_batch=dims[0],
        output_name=frozen.output_name, num_classes=frozen.output_shape[-1], source=source,
        sha256=file_sha256(path), gflop_per_image=gflop, notes=tuple(notes), format="tensorflow",
    )
